#!/usr/bin/env python3
"""Writes the small NIfTI fixtures the Swift tests read (Tests/MedicalImagingTests/Fixtures).

Files are written by nibabel, an implementation independent of ours, so the tests check that SwiftUNet
reads what the rest of the world writes. Run: pip install nibabel numpy && python3 tools/make_nifti_fixtures.py
Output: for each case NAME, the image file and NAME.expected.npy (float64 values after scaling, NIfTI index
order flattened with the first axis fastest), plus expected.json (shape, datatype, affine, orientation, spacing).
"""
import json
import os
import numpy as np
import nibabel as nib

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "MedicalImagingTests", "Fixtures")
rng = np.random.default_rng(1234)


def quaternion_affine(b, c, d, qfac, zooms, offset):
    hdr = nib.Nifti1Header()
    hdr.set_qform(np.eye(4))
    hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = b, c, d
    hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"] = offset
    hdr["pixdim"][0] = qfac
    hdr["pixdim"][1:4] = zooms
    return hdr.get_qform()


def save(name, img, filename):
    path = os.path.join(OUT, filename)
    nib.save(img, path)
    back = nib.load(path)
    np.save(os.path.join(OUT, name + ".expected.npy"), np.asarray(back.get_fdata(dtype=np.float64)).ravel(order="F"))
    hdr = back.header
    return {
        "file": filename,
        "shape": [int(x) for x in back.shape],
        "datatype": str(hdr.get_data_dtype().newbyteorder("=").name),
        "affine": back.affine.tolist(),
        "orientation": "".join(nib.aff2axcodes(back.affine)),
        "spacing": [float(z) for z in hdr.get_zooms()[:3]],
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "big_endian": hdr.endianness == ">",
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = {}
    rot = nib.eulerangles.euler2mat(0.3, -0.2, 0.1)

    # 1. uint8, 3D, little-endian, sform only.
    data = rng.integers(0, 255, size=(7, 6, 5), dtype=np.uint8)
    aff = np.diag([1.5, 2.0, 2.5, 1.0]); aff[:3, 3] = [-10, 20, 5]
    img = nib.Nifti1Image(data, aff)
    img.set_qform(None, code=0); img.set_sform(aff, code=2)
    cases["uint8_sform"] = save("uint8_sform", img, "uint8_sform.nii")

    # 2. int16, big-endian, scaled, qform only with a rotation and qfac = -1, gzip.
    data = rng.integers(-3000, 3000, size=(6, 5, 4), dtype=np.int16)
    qaff = quaternion_affine(0.2, -0.1, 0.3, -1, (1.2, 0.9, 3.0), (4.0, -5.0, 6.0))
    hdr = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(data, None, header=hdr)
    img.set_sform(None, code=0); img.set_qform(qaff, code=1)
    img.header.set_slope_inter(0.5, 10.0)
    img.set_data_dtype(np.dtype(">i2"))
    cases["int16_be_scaled_qform"] = save("int16_be_scaled_qform", img, "int16_be_scaled_qform.nii.gz")

    # 3. float32 4D (X, Y, Z, channels) like MSD images, both forms set (sform wins), gzip.
    data = rng.normal(size=(5, 4, 3, 4)).astype(np.float32)
    saff = np.eye(4); saff[:3, :3] = rot @ np.diag([1.0, 1.0, 1.0]); saff[:3, 3] = [1, 2, 3]
    img = nib.Nifti1Image(data, saff)
    img.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1); img.set_sform(saff, code=4)
    cases["float32_4d_both"] = save("float32_4d_both", img, "float32_4d_both.nii.gz")

    # 4. NIfTI-2, float64, LPS orientation.
    data = rng.normal(size=(4, 3, 5)) * 1e3
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    img = nib.Nifti2Image(data, aff)
    cases["nifti2_float64"] = save("nifti2_float64", img, "nifti2_float64.nii")

    # 5. NIfTI-2, big-endian int32, gzip.
    data = rng.integers(-2**31, 2**31 - 1, size=(3, 4, 2), dtype=np.int32)
    img = nib.Nifti2Image(data, np.eye(4), header=nib.Nifti2Header(endianness=">"))
    img.set_data_dtype(np.dtype(">i4"))
    cases["nifti2_int32_be"] = save("nifti2_int32_be", img, "nifti2_int32_be.nii.gz")

    # 6. Remaining integer types, and a header extension before the data (vox_offset > 352).
    for name, dtype in [("int8", np.int8), ("uint16", np.uint16), ("uint32", np.uint32), ("int64", np.int64)]:
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -2**40), min(info.max, 2**40)
        data = rng.integers(lo, hi, size=(4, 3, 2), dtype=dtype, endpoint=True)
        img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 1.6, 1.0]), dtype=dtype)
        img.set_data_dtype(dtype)
        if name == "uint16":
            img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment that pushes the data back" * 3))
        cases[name] = save(name, img, name + ".nii.gz")

    # 7. Neither form set: spacing only (method 1); nibabel's own fallback differs, so the test checks diag(pixdim).
    data = rng.integers(0, 4, size=(3, 3, 3), dtype=np.uint8)
    img = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_qform(None, code=0); img.set_sform(None, code=0)
    cases["no_forms"] = save("no_forms", img, "no_forms.nii")
    cases["no_forms"]["affine"] = np.diag([2.0, 3.0, 4.0, 1.0]).tolist()
    cases["no_forms"]["orientation"] = "RAS"

    # NumPy files in the other memory orders and byte orders the .npy reader must handle.
    np.save(os.path.join(OUT, "c_order_int16_be.npy"), np.arange(12, dtype=">i2").reshape(3, 4) - 5)
    np.save(os.path.join(OUT, "fortran_float32.npy"), np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8))

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
    print(f"wrote {len(cases)} fixtures to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
