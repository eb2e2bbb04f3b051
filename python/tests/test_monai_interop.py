"""MONAI interop (MONAI and nibabel are optional, not dependencies: skipped where absent):
a volume and Model.affine become a MetaTensor, and MONAI's SaveImage writes the geometry and
voxels the package's own NIfTI has."""

import numpy as np
import pytest

import brats_ldm

monai = pytest.importorskip("monai")
nibabel = pytest.importorskip("nibabel")


def test_metatensor_and_save_image_keep_the_geometry(model, tmp_path):
    from monai.data import MetaTensor
    from monai.transforms import SaveImage

    volume = model.generate(seed=0, sampler="ddim", steps=2)  # channel-first [C, D, H, W]
    image = MetaTensor(volume, affine=model.affine)
    np.testing.assert_array_equal(image.affine.numpy(), model.affine)

    save = SaveImage(output_dir=tmp_path, output_postfix="monai", separate_folder=False, resample=False, print_log=False)
    save(image)
    brats_ldm.save_nifti(tmp_path / "ours.nii.gz", volume, model.affine)

    written = sorted(tmp_path.glob("*_monai.nii.gz"))
    assert len(written) == 1, list(tmp_path.iterdir())
    theirs = nibabel.load(written[0])
    ours = nibabel.load(tmp_path / "ours.nii.gz")
    np.testing.assert_allclose(theirs.affine, model.affine, atol=1e-6)
    np.testing.assert_allclose(ours.affine, model.affine, atol=1e-6)
    np.testing.assert_allclose(ours.header.get_qform(), model.affine, atol=1e-6)
    assert nibabel.aff2axcodes(ours.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(np.asarray(theirs.dataobj).squeeze(), volume[0])
    np.testing.assert_array_equal(np.asarray(ours.dataobj), volume[0])

    # And back: MONAI's LoadImage gives the same array and affine.
    from monai.transforms import LoadImage

    loaded = LoadImage(image_only=True)(str(tmp_path / "ours.nii.gz"))
    np.testing.assert_array_equal(np.asarray(loaded), volume[0])
    np.testing.assert_allclose(loaded.affine.numpy(), model.affine, atol=1e-6)
