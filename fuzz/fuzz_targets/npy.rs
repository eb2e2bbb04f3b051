//! `.npy` through `ldm_io::npy` (what `generate --init-noise` and the fixtures are read with):
//! an input with the `\x93NUMPY` magic is read as a file, from memory, and as a stream of
//! unknown length (a device), and all three agree; an accepted array written back by
//! `write_f32` reads back identical. Any other input describes an array (shape from its first
//! bytes, values from the rest) that must survive write -> read unchanged.

#![no_main]

use ldm_io::npy::{parse_f32, read_f32_within, read_from, write_f32, NpyArray};
use ldm_io::Budget;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        if data.starts_with(b"\x93NUMPY") {
            read_three_ways(data);
        } else {
            generated_round_trip(data);
        }
    })
});

fn bits(a: &NpyArray) -> (Vec<usize>, Vec<u32>) {
    (
        a.shape.clone(),
        a.data.iter().map(|v| v.to_bits()).collect(),
    )
}

fn read_three_ways(data: &[u8]) {
    let budget = Budget::new(ldm_fuzz::LIMIT as u64 / 4);
    let path = ldm_fuzz::scratch::file("noise.npy", data);
    let file = read_f32_within(&path, budget);
    let memory = parse_f32(data, "memory");
    let stream = read_from(&mut &data[..], None, budget, "stream");
    assert_eq!(file.is_ok(), memory.is_ok());
    assert_eq!(file.is_ok(), stream.is_ok());
    let Ok(a) = file else { return };
    assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    assert_eq!(bits(&a), bits(&memory.expect("agrees")));
    assert_eq!(bits(&a), bits(&stream.expect("agrees")));
    let mut out = Vec::new();
    write_f32(&mut out, &a.shape, &a.data).expect("the writer takes what the reader gave");
    assert_eq!(
        bits(&parse_f32(&out, "written").expect("reads back")),
        bits(&a)
    );
}

fn generated_round_trip(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let ndim = (first % 5) as usize;
    if rest.len() < ndim {
        return;
    }
    let shape: Vec<usize> = rest[..ndim].iter().map(|&d| (d % 9) as usize).collect();
    let raw = &rest[ndim..];
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let at = (4 * i) % raw.len().max(1);
            let mut w = [0u8; 4];
            for (k, b) in w.iter_mut().enumerate() {
                *b = raw.get(at + k).copied().unwrap_or(0);
            }
            f32::from_le_bytes(w)
        })
        .collect();
    let mut out = Vec::new();
    write_f32(&mut out, &shape, &values).expect("shape and values agree");
    assert_eq!((out.len() - 4 * n) % 64, 0, "header padded to 64 bytes");
    let back = parse_f32(&out, "written").expect("the writer's output reads back");
    assert_eq!(
        bits(&back),
        (shape, values.iter().map(|v| v.to_bits()).collect())
    );
}
