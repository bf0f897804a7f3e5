"""Tests of the characterized-exposure reader and writer (calibstream.io.exposure).

Layout: shared/contracts/characterized-exposure.md. A small valid exposure is
built here, written with ``write_exposure`` and read back; malformed files are
made by editing that file with astropy (only truncation writes raw bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm
from calibstream.errors import (
    CalibstreamError,
    ExposureError,
    InvalidApCorrError,
    InvalidHduError,
    InvalidKeyError,
    InvalidPixelsError,
    InvalidPsfError,
    MissingFileError,
    MissingHduError,
    MissingKeyError,
    NotFitsError,
    TruncatedFileError,
)
from calibstream.io.exposure import (
    ICSRC_COLUMNS,
    Exposure,
    IcSrc,
    Metadata,
    Psf,
    apcorr_hdu,
    read_exposure,
    write_exposure,
)

NY, NX = 48, 64
PLANES = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,  # MP_DETECTED and longer are HIERARCH cards
    "DETECTED_NEGATIVE": 6,
    "NO_DATA": 8,
}
IGNORE_ASTROPY_WARNINGS = pytest.mark.filterwarnings(
    "ignore::astropy.utils.exceptions.AstropyUserWarning"
)


# ---------------------------------------------------------------- factory


def make_wcs() -> WCS:
    """A TAN-SIP first-guess WCS, ~0.2 arcsec pixels, with a visible distortion."""
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP",
        CRPIX1=32.5, CRPIX2=24.5, CRVAL1=150.1, CRVAL2=2.2,
        CD1_1=-5.6e-5, CD1_2=1.0e-6, CD2_1=1.2e-6, CD2_2=5.6e-5,
        A_ORDER=2, A_2_0=2.0e-5, A_1_1=-1.0e-5, A_0_2=4.0e-6,
        B_ORDER=2, B_2_0=3.0e-6, B_1_1=5.0e-6, B_0_2=1.5e-5,
    )  # fmt: skip
    return WCS(header)


def make_psf(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    psf = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * sigma**2))
    return (psf / psf.sum()).astype(np.float32)


def make_exposure(**changes) -> Exposure:
    """A valid minimal exposure; keyword arguments replace fields."""
    yy, xx = np.mgrid[:NY, :NX]
    image = 5000.0 * np.exp(-((xx - 30.3) ** 2 + (yy - 20.7) ** 2) / (2 * 1.5**2))
    image += 0.25 * np.sin(xx * 0.7) * np.cos(yy * 1.3)  # some structure, deterministic
    mask = np.zeros((NY, NX), np.int32)
    mask[0, :] |= 1 << PLANES["EDGE"]
    mask[-1, :] |= 1 << PLANES["EDGE"]
    mask[20, 30] |= 1 << PLANES["SAT"]
    mask[18:24, 27:34] |= 1 << PLANES["DETECTED"]
    mask[40, 5] |= (1 << PLANES["CR"]) | (1 << PLANES["INTRP"])
    variance = (image.clip(0) + 25.0).astype(np.float32)
    wcs = make_wcs()
    x = np.array([30.3, 10.0, 55.5])
    y = np.array([20.7, 5.0, 40.25])
    ra, dec = wcs.all_pix2world(x, y, 0)
    fields = {
        "image": image.astype(np.float32),
        "mask": mask,
        "variance": variance,
        "mask_planes": MappingProxyType(dict(PLANES)),
        "psf": Psf(image=make_psf(), x=31.5, y=23.25, fwhm=3.53),
        "apcorr": ApCorrMap(
            terms=MappingProxyType(
                {
                    # Distinct, asymmetric coefficients about a plausible 1 ([sanity] apcorr).
                    "psf_flux": ApCorrTerm(
                        "psf_flux",
                        2,
                        np.arange(9, dtype=float).reshape(3, 3) * 1e-3 + np.diag([1.0, 0, 0]),
                        0.01,
                    ),
                    "ap_flux_12": ApCorrTerm(
                        "ap_flux_12", 1, np.array([[0.99, 0.002], [-0.001, 0.0]]), 0.004
                    ),
                }
            ),
            width=NX,
            height=NY,
        ),
        "icsrc": IcSrc(
            id=np.array([7, 8, 2**40], dtype=np.int64),
            x=x,
            y=y,
            ra=ra,
            dec=dec,
            psf_flux=np.array([5.1e4, 1.2e3, 3.3e3]),
            psf_flux_err=np.array([230.0, 41.5, 60.25]),
            calib_psf_candidate=np.array([True, False, True]),
            calib_psf_used=np.array([True, False, False]),
            calib_psf_reserved=np.array([False, False, True]),
        ),
        "metadata": Metadata(
            expid=2024061200042,
            visit=903342,
            detector=17,
            band="r",
            mjd_obs=60123.456789012,
            exptime=30.5,
            airmass=1.234,
            bore_ra=150.125,
            bore_dec=2.1875,
        ),
        "wcs": wcs,
    }
    fields.update(changes)
    return Exposure(**fields)


@pytest.fixture(scope="module")
def exposure() -> Exposure:
    return make_exposure()


@pytest.fixture
def valid(tmp_path: Path, exposure: Exposure) -> Path:
    path = tmp_path / "exposure.fits"
    write_exposure(exposure, path)
    return path


def edited(src: Path, edit: Callable[[fits.HDUList], fits.HDUList | None]) -> Path:
    """Apply ``edit`` to the opened file and write the result (or its return value)."""
    dst = src.with_name("edited.fits")
    with fits.open(src) as hdul:
        result = edit(hdul)
        (hdul if result is None else result).writeto(dst, overwrite=True)
    return dst


def truncated(src: Path, length: int) -> Path:
    dst = src.with_name(f"cut-{length}.fits")
    dst.write_bytes(src.read_bytes()[:length])
    return dst


def raises(path: Path, cls: type[ExposureError], where: str) -> ExposureError:
    """Read ``path``; it must fail with exactly ``cls``, naming ``where``."""
    with pytest.raises(ExposureError) as info:
        read_exposure(path)
    exc = info.value
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
    assert exc.where == where, str(exc)
    assert where in str(exc)
    assert exc.reason and exc.kind == cls.kind
    assert isinstance(exc, CalibstreamError)
    return exc


def assert_same(got: Exposure, want: Exposure) -> None:
    for name in ("image", "mask", "variance"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.shape == (NY, NX)
    assert dict(got.mask_planes) == dict(want.mask_planes)

    np.testing.assert_array_equal(got.psf.image, want.psf.image)
    assert got.psf.image.dtype == np.float32
    assert (got.psf.x, got.psf.y, got.psf.fwhm) == (want.psf.x, want.psf.y, want.psf.fwhm)

    assert list(got.apcorr.terms) == list(want.apcorr.terms)
    assert (got.apcorr.width, got.apcorr.height) == (NX, NY)
    for name, term in want.apcorr.terms.items():
        back = got.apcorr.terms[name]
        assert (back.name, back.order, back.err) == (term.name, term.order, term.err)
        assert back.coeffs.shape == (term.order + 1, term.order + 1)
        np.testing.assert_array_equal(back.coeffs, term.coeffs)
    xs, ys = np.array([0.0, 17.5, NX - 1]), np.array([0.0, 30.0, NY - 1])
    np.testing.assert_array_equal(
        got.apcorr.evaluate("psf_flux", xs, ys), want.apcorr.evaluate("psf_flux", xs, ys)
    )

    assert got.icsrc is not None and want.icsrc is not None
    assert len(got.icsrc) == len(want.icsrc) == 3
    for column in ICSRC_COLUMNS:
        a, b = getattr(got.icsrc, column), getattr(want.icsrc, column)
        np.testing.assert_array_equal(a, b, err_msg=column)
        assert a.dtype == b.dtype, column

    assert got.metadata == want.metadata

    assert got.wcs.sip is not None
    assert got.wcs.wcs.ctype[0] == "RA---TAN-SIP"
    py, px = np.mgrid[0:NY:7, 0:NX:9]
    sky_got = np.column_stack(got.wcs.all_pix2world(px.ravel(), py.ravel(), 0))
    sky_want = np.column_stack(want.wcs.all_pix2world(px.ravel(), py.ravel(), 0))
    np.testing.assert_allclose(sky_got, sky_want, rtol=0, atol=1e-10)  # < 0.4 µas
    # The SIP terms matter at this tolerance: dropping them would be caught.
    sky_linear = np.column_stack(want.wcs.wcs_pix2world(px.ravel(), py.ravel(), 0))
    assert np.max(np.abs(sky_linear - sky_want)) > 1e-8


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_round_trip(tmp_path: Path, exposure: Exposure, compress: bool) -> None:
    path = tmp_path / "exposure.fits"
    write_exposure(exposure, path, compress=compress)
    with fits.open(path) as hdul:
        kinds = {hdu.name: type(hdu) for hdu in hdul}
        mask_header = hdul["MASK"].header
        assert "MP_DETECTED_NEGATIVE" in mask_header
        assert "HIERARCH MP_DETECTED_NEGATIVE" in mask_header.tostring()
    expected = fits.CompImageHDU if compress else fits.ImageHDU
    assert all(kinds[name] is expected for name in ("IMAGE", "MASK", "VARIANCE"))

    got = read_exposure(path)
    assert_same(got, exposure)
    assert got.bits("NO_DATA", "DETECTED_NEGATIVE", "NOT_A_PLANE") == (1 << 8) | (1 << 6)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_arrays_native_and_read_only(tmp_path: Path, exposure: Exposure, compress: bool) -> None:
    path = tmp_path / "exposure.fits"
    write_exposure(exposure, path, compress=compress)
    got = read_exposure(path)
    arrays = {
        "image": got.image,
        "mask": got.mask,
        "variance": got.variance,
        "psf": got.psf.image,
        **{f"icsrc.{c}": getattr(got.icsrc, c) for c in ICSRC_COLUMNS},
    }
    for name, array in arrays.items():
        assert array.dtype.isnative, name
        assert not array.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            array.flat[0] = array.flat[0]
    for term in got.apcorr.terms.values():
        assert term.coeffs.dtype.isnative
    with pytest.raises(TypeError):
        got.mask_planes["NEW"] = 9  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.image = got.image  # type: ignore[misc]


def test_shuffled_hdus_and_extras_ignored(valid: Path, exposure: Exposure) -> None:
    def shuffle(hdul: fits.HDUList) -> fits.HDUList:
        hdul[0].header["OBSERVER"] = "nobody"
        hdul[0].header["HIERARCH SOME LONG EXTRA KEY"] = 1.5
        hdul["IMAGE"].header["GAIN"] = 1.7
        hdul["MASK"].header["MPX_BAD"] = "not a plane key"
        hdul["PSF"].header["PSFMODEL"] = "gaussian"
        hdul["APCORR"].header["COMMENT"] = "extra comment"
        junk = fits.ImageHDU(np.zeros((3, 4), np.float64), name="JUNK")
        notes = fits.BinTableHDU.from_columns(
            [fits.Column("note", "10A", array=["a", "b"])], name="NOTES"
        )
        order = ["ICSRC", "PSF", "VARIANCE", "APCORR", "MASK", "IMAGE"]
        return fits.HDUList(
            [
                hdul[0],
                junk,
                *(hdul[name] for name in order[:3]),
                notes,
                *(hdul[name] for name in order[3:]),
            ]
        )

    path = edited(valid, shuffle)
    with fits.open(path) as hdul:
        assert [hdu.name for hdu in hdul][1:] == [
            "JUNK",
            "ICSRC",
            "PSF",
            "VARIANCE",
            "NOTES",
            "APCORR",
            "MASK",
            "IMAGE",
        ]
    assert_same(read_exposure(path), exposure)


def test_icsrc_is_optional(tmp_path: Path) -> None:
    path = tmp_path / "exposure.fits"
    write_exposure(make_exposure(icsrc=None), path)
    assert read_exposure(path).icsrc is None


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_nan_pixels_under_no_data_are_accepted(tmp_path: Path, compress: bool) -> None:
    base = make_exposure()
    image, variance, mask = base.image.copy(), base.variance.copy(), base.mask.copy()
    image[5:8, 50:60] = np.nan
    variance[5:8, 50:60] = np.nan
    variance[9, 50] = 0.0
    mask[5:8, 50:60] |= 1 << PLANES["NO_DATA"]
    mask[9, 50] |= 1 << PLANES["NO_DATA"]
    path = tmp_path / "exposure.fits"
    write_exposure(
        make_exposure(image=image, variance=variance, mask=mask), path, compress=compress
    )
    got = read_exposure(path)
    assert np.isnan(got.image[5:8, 50:60]).all()
    assert np.isnan(got.variance[5:8, 50:60]).all()
    assert np.isfinite(got.image[8:, :]).all()


def test_no_data_plane_on_bit_31(tmp_path: Path) -> None:
    """Bit 31 is a legal plane; its value 1 << 31 does not fit an int32 mask."""
    base = make_exposure()
    image, mask = base.image.copy(), base.mask.copy()
    image[2, 3] = np.nan
    mask[2, 3] |= np.int32(-(2**31))  # bit 31
    planes = {**PLANES, "NO_DATA": 31}
    path = tmp_path / "exposure.fits"
    write_exposure(make_exposure(image=image, mask=mask, mask_planes=planes), path)
    got = read_exposure(path)
    assert got.mask_planes["NO_DATA"] == 31
    assert got.mask[2, 3] < 0

    image[4, 4] = np.nan  # not under NO_DATA: still an error
    write_exposure(make_exposure(image=image, mask=mask, mask_planes=planes), path)
    raises(path, InvalidPixelsError, "IMAGE")


# ---------------------------------------------------------------- not FITS, truncated


def test_text_file_is_not_fits(tmp_path: Path) -> None:
    path = tmp_path / "notes.fits"
    path.write_text("this is not a FITS file\n" * 200)
    raises(path, NotFitsError, "notes.fits")


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    raises(tmp_path / "gone.fits", MissingFileError, "gone.fits")


def test_empty_file_is_not_fits(tmp_path: Path) -> None:
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    raises(path, NotFitsError, "empty.fits")


def _hdu_span(path: Path, name: str) -> tuple[int, int, int]:
    """(header start, data start, data end) of the named HDU in the file."""
    with fits.open(path) as hdul:
        index = hdul.index_of(name)
        info = hdul.fileinfo(index)
    return info["hdrLoc"], info["datLoc"], info["datLoc"] + info["datSpan"]


@IGNORE_ASTROPY_WARNINGS
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("name", ["IMAGE", "MASK", "VARIANCE"])
def test_truncated_in_pixel_data(
    tmp_path: Path, exposure: Exposure, compress: bool, name: str
) -> None:
    path = tmp_path / "exposure.fits"
    write_exposure(exposure, path, compress=compress)
    _, start, end = _hdu_span(path, name)
    exc = raises(truncated(path, (start + end) // 2), TruncatedFileError, name)
    assert "truncated" in exc.reason


@IGNORE_ASTROPY_WARNINGS
@pytest.mark.parametrize("cut_from_end", [1, 100, 2000])
def test_truncated_near_the_end(valid: Path, cut_from_end: int) -> None:
    size = valid.stat().st_size
    raises(truncated(valid, size - cut_from_end), TruncatedFileError, "ICSRC")


@IGNORE_ASTROPY_WARNINGS
def test_truncated_in_a_header(valid: Path) -> None:
    """A cut header is not silently dropped, neither the optional ICSRC nor a required one."""
    start, data, _ = _hdu_span(valid, "ICSRC")
    raises(truncated(valid, data - 1), TruncatedFileError, "ICSRC")  # after its EXTNAME card
    exc = raises(truncated(valid, start + 500), TruncatedFileError, "HDU 6")
    assert "header" in exc.reason
    start, _, _ = _hdu_span(valid, "MASK")
    raises(truncated(valid, start + 500), TruncatedFileError, "HDU 2")


@IGNORE_ASTROPY_WARNINGS
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_truncation_sweep_only_raises_exposure_errors(
    tmp_path: Path, exposure: Exposure, compress: bool
) -> None:
    path = tmp_path / "exposure.fits"
    write_exposure(exposure, path, compress=compress)
    size = path.stat().st_size
    with fits.open(path) as hdul:
        icsrc_start = hdul.fileinfo(hdul.index_of("ICSRC"))["hdrLoc"]
    kinds = set()
    for k in range(20):
        cut = truncated(path, k * size // 20)
        try:
            got = read_exposure(cut)
        except ExposureError as exc:  # anything else fails the test
            kinds.add(type(exc))
        else:
            # Only a cut exactly before the optional ICSRC leaves a complete, valid file.
            assert k * size // 20 == icsrc_start and got.icsrc is None, k
        cut.unlink()
    assert TruncatedFileError in kinds and NotFitsError in kinds


# ---------------------------------------------------------------- missing / invalid parts


@pytest.mark.parametrize("name", ["IMAGE", "MASK", "VARIANCE", "PSF", "APCORR"])
def test_missing_hdu(valid: Path, name: str) -> None:
    def drop(hdul: fits.HDUList) -> None:
        del hdul[name]

    raises(edited(valid, drop), MissingHduError, name)


def _set_data(name: str, make: Callable[[np.ndarray], np.ndarray]):
    def edit(hdul: fits.HDUList) -> None:
        hdul[name].data = make(np.asarray(hdul[name].data))

    return edit


def _set_key(name: str | int, key: str, value):
    def edit(hdul: fits.HDUList) -> None:
        hdul[name].header[key] = value

    return edit


def _del_key(name: str | int, key: str):
    def edit(hdul: fits.HDUList) -> None:
        del hdul[name].header[key]

    return edit


def _apcorr_rows(rows: list[tuple[str, float, list[float]]], order_format: str = "J"):
    """Replace APCORR by a table of (NAME, ORDER, COEFFS) rows written as given."""

    def edit(hdul: fits.HDUList) -> None:
        coeffs = np.empty(len(rows), dtype=object)
        for i, (_, _, row) in enumerate(rows):
            coeffs[i] = np.asarray(row, dtype=np.float64)
        hdul["APCORR"] = fits.BinTableHDU.from_columns([
            fits.Column("NAME", "32A", array=[r[0] for r in rows]),
            fits.Column("ORDER", order_format, array=[r[1] for r in rows]),
            fits.Column("COEFFS", "PD()", array=coeffs),
            fits.Column("ERR", "D", array=[0.01] * len(rows)),
        ], name="APCORR")  # fmt: skip

    return edit


def _apcorr_terms(*terms: ApCorrTerm):
    def edit(hdul: fits.HDUList) -> None:
        hdul["APCORR"] = apcorr_hdu(ApCorrMap({t.name: t for t in terms}, NX, NY))

    return edit


def _with_pixel(name: str, value: float):
    def make(data: np.ndarray) -> np.ndarray:
        data = data.copy()
        data[30, 40] = value
        return data

    return _set_data(name, make)


def _non_tan(hdul: fits.HDUList) -> None:
    header = hdul["IMAGE"].header
    for key in list(header):
        if key.split("_")[0] in ("A", "B", "AP", "BP"):
            del header[key]
    header["CTYPE1"], header["CTYPE2"] = "RA---ZEA", "DEC--ZEA"


def _even_psf(hdul: fits.HDUList) -> None:
    hdul["PSF"].data = make_psf(size=10)


ERROR_CASES = {
    # wrong dtype
    "image_float64": (_set_data("IMAGE", lambda d: d.astype(np.float64)), InvalidHduError, "IMAGE"),
    "image_int": (
        _set_data("IMAGE", lambda d: d.round().astype(np.int32)),
        InvalidHduError,
        "IMAGE",
    ),
    "mask_float": (_set_data("MASK", lambda d: d.astype(np.float32)), InvalidHduError, "MASK"),
    "variance_float64": (
        _set_data("VARIANCE", lambda d: d.astype(np.float64)),
        InvalidHduError,
        "VARIANCE",
    ),
    # wrong shape
    "mask_shape": (_set_data("MASK", lambda d: d[:-2]), InvalidHduError, "MASK"),
    "variance_shape": (_set_data("VARIANCE", lambda d: d[:, :-1]), InvalidHduError, "VARIANCE"),
    "image_3d": (_set_data("IMAGE", lambda d: np.stack([d, d])), InvalidHduError, "IMAGE"),
    # PSF
    "psf_even": (_even_psf, InvalidPsfError, "PSF"),
    "psf_unnormalised": (_set_data("PSF", lambda d: d * np.float32(1.1)), InvalidPsfError, "PSF"),
    "psf_no_fwhm": (_del_key("PSF", "FWHM"), MissingKeyError, "FWHM"),
    "psf_no_psfx": (_del_key("PSF", "PSFX"), MissingKeyError, "PSFX"),
    # APCORR
    "apcorr_no_psf_flux": (
        _apcorr_terms(ApCorrTerm("ap_flux_12", 0, np.array([[0.98]]), 0.01)),
        InvalidApCorrError,
        "APCORR.NAME",
    ),
    "apcorr_coeffs_length": (
        _apcorr_terms(
            ApCorrTerm("psf_flux", 0, np.array([[1.0]]), 0.01),
            ApCorrTerm("ap_flux_12", 1, np.array([0.98, 0.001, 0.002]), 0.01),  # needs 4
        ),
        InvalidApCorrError,
        "APCORR.COEFFS",
    ),
    "apcorr_coeffs_length_order0": (
        _apcorr_rows([("psf_flux", 0, [1.0, 0.0])]),
        InvalidApCorrError,
        "APCORR.COEFFS",
    ),
    "apcorr_order_nan": (
        _apcorr_rows([("psf_flux", np.nan, [1.0])], order_format="D"),
        InvalidApCorrError,
        "APCORR.ORDER",
    ),
    "apcorr_order_fraction": (
        _apcorr_rows([("psf_flux", 0.5, [1.0])], order_format="D"),
        InvalidApCorrError,
        "APCORR.ORDER",
    ),
    # primary header
    "no_expid": (_del_key(0, "EXPID"), MissingKeyError, "EXPID"),
    "no_band": (_del_key(0, "BAND"), MissingKeyError, "BAND"),
    "no_mjd_obs": (_del_key(0, "MJD-OBS"), MissingKeyError, "MJD-OBS"),
    "no_exptime": (_del_key(0, "EXPTIME"), MissingKeyError, "EXPTIME"),
    "expid_fraction": (_set_key(0, "EXPID", 12.5), InvalidKeyError, "EXPID"),
    "expid_string": (_set_key(0, "EXPID", "abc"), InvalidKeyError, "EXPID"),
    "expid_bool": (_set_key(0, "EXPID", True), InvalidKeyError, "EXPID"),
    "mjd_string": (_set_key(0, "MJD-OBS", "yesterday"), InvalidKeyError, "MJD-OBS"),
    # pixels
    "image_nan": (_with_pixel("IMAGE", np.nan), InvalidPixelsError, "IMAGE"),
    "image_inf": (_with_pixel("IMAGE", np.inf), InvalidPixelsError, "IMAGE"),
    "variance_nan": (_with_pixel("VARIANCE", np.nan), InvalidPixelsError, "VARIANCE"),
    "variance_zero": (_with_pixel("VARIANCE", 0.0), InvalidPixelsError, "VARIANCE"),
    "variance_negative": (_with_pixel("VARIANCE", -1.0), InvalidPixelsError, "VARIANCE"),
    "variance_inf": (_with_pixel("VARIANCE", np.inf), InvalidPixelsError, "VARIANCE"),
    # WCS
    "wcs_not_tan": (_non_tan, InvalidKeyError, "CTYPE1"),
    "wcs_missing": (_del_key("IMAGE", "CTYPE1"), MissingKeyError, "CTYPE1"),
    # mask planes
    "mask_plane_string": (_set_key("MASK", "MP_CR", "three"), InvalidKeyError, "MP_CR"),
    "mask_plane_float_hierarch": (
        _set_key("MASK", "HIERARCH MP_DETECTED_NEGATIVE", 6.5),
        InvalidKeyError,
        "MP_DETECTED_NEGATIVE",
    ),
    "mask_plane_out_of_range": (_set_key("MASK", "MP_BAD", 32), InvalidKeyError, "MP_BAD"),
}


@pytest.mark.parametrize(("edit", "cls", "where"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_malformed_input_raises_typed_error(valid: Path, edit, cls, where: str) -> None:
    raises(edited(valid, edit), cls, where)


def test_nan_outside_no_data_is_rejected_even_with_no_data_elsewhere(valid: Path) -> None:
    def edit(hdul: fits.HDUList) -> None:
        hdul["MASK"].data[30, 40] |= 1 << PLANES["NO_DATA"]
        hdul["IMAGE"].data[30, 40] = np.nan  # masked: fine
        hdul["IMAGE"].data[30, 41] = np.nan  # not masked: an error

    exc = raises(edited(valid, edit), InvalidPixelsError, "IMAGE")
    assert exc.reason.startswith("1 ")
