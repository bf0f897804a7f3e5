"""Hostile inputs (issue 14): files and events as an attacker on loopback, or a careless
user, would send them. Each runs through the detect step as the service runs it
(``streams.runner.run`` on the encoded event) in a fresh process forked from a server that
imported the service once, so that its peak RSS (VmHWM, imports included) is a science
process's. Each must end as a typed failure event at the read stage, with its kind and a
word of its reason, within CASE_SECONDS and under CASE_RSS_MB; a refused path is refused
in the same words whether or not it exists.
"""

from __future__ import annotations

import dataclasses
import errno
import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calibstream.cli import main as core_main
from calibstream.config import Config, SanityConfig
from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm
from calibstream.errors import ImplausibleValueError, NotFitsError
from calibstream.failures import TransientFailure, failure_of
from calibstream.io.exposure import Metadata, Psf, read_exposure, read_metadata, write_exposure
from calibstream.io.outputs import exposure_dir, read_summary
from calibstream.simulate.survey import write_simulation
from streams import events, runner
from streams.codec import decode, encode
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings, load_deployment
from streams.topology import CALIBRATE, FAILURES

CASE_SECONDS = 5.0  # the detect step, per case
CASE_RSS_MB = 300.0  # peak RSS of the process that ran it (imports: ~150 MB)
SIZE = 768  # the simulated exposure the hostile files are made from (calibrates "ok")


# ---------------------------------------------------------------- running one case


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _case(conn, uri: str, expid: int, roots: tuple[str, ...], root: str) -> None:
    """In a fresh process: the detect step on the event naming ``uri``; what it produced."""
    settings = StreamSettings(input_roots=roots, output_root=root, refcat=root)
    ctx = runner.Context(settings, Config(), RedisReadModel(None), None, CALIBRATE)
    meta = Metadata(expid=expid, visit=1, detector=0, band="r", mjd_obs=61000.0, exptime=30.0)
    value = encode("characterized_exposure", events.characterized_exposure_event(meta, uri))
    message = runner.Message("calibstream.exposures", 0, 0, events.exposure_key(expid), value)
    start = time.perf_counter()
    try:
        outputs = runner.run(ctx, "detect", message)
        result = {"roles": [o.role for o in outputs]}
        failures = [decode(o.value).record for o in outputs if o.role == FAILURES]
        if failures:
            result.update({k: failures[0][k] for k in ("stage", "error", "reason", "where")})
    except TransientFailure as exc:
        result = {"roles": [], "error": "transient", "reason": str(exc)}
    result.update(seconds=time.perf_counter() - start, rss_mb=_vm_hwm_mb())
    conn.send(result)


@pytest.fixture(scope="module")
def forked():
    """Runs a case in a process forked from a server that imported the service once."""
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["streams.runner", "agents.detect", "streams.readmodel", __name__])

    def run(uri: str, expid: int, roots: tuple[str, ...], root: Path) -> dict:
        receive, send = mp.Pipe(duplex=False)
        process = mp.Process(target=_case, args=(send, uri, expid, roots, str(root)))
        process.start()
        send.close()
        try:
            if not receive.poll(60):
                raise AssertionError(f"{uri}: no outcome after 60 s")
            return receive.recv()
        finally:
            process.kill()
            process.join()

    return run


# ---------------------------------------------------------------- making hostile files


def sparse_fits(path: Path, hdus: list[tuple[fits.Header, int]], prefix: bytes = b"") -> Path:
    """``prefix`` (whole HDUs), then each header followed by a hole the size of its data:
    the file declares its planes in full and takes next to no disk."""
    with open(path, "wb") as handle:
        handle.write(prefix)
        for header, nbytes in hdus:
            handle.write(header.tostring().encode("ascii"))
            handle.seek(-(-nbytes // 2880) * 2880, os.SEEK_CUR)
        handle.truncate()
    return path


def image_header(name: str, axes: tuple[int, ...], bitpix: int = -32) -> tuple[fits.Header, int]:
    cards = [("XTENSION", "IMAGE"), ("BITPIX", bitpix), ("NAXIS", len(axes))]
    cards += [(f"NAXIS{i + 1}", n) for i, n in enumerate(axes)]
    cards += [("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", name)]
    return fits.Header(cards), abs(bitpix) // 8 * int(np.prod(axes))


def huge_planes(path: Path, good: Path, axes: tuple[int, ...]) -> Path:
    primary = fits.getheader(good, 0)
    planes = [
        image_header(n, axes, b) for n, b in (("IMAGE", -32), ("MASK", 32), ("VARIANCE", -32))
    ]
    return sparse_fits(path, [(primary, 0), *planes])


def huge_icsrc(path: Path, good: Path) -> Path:
    with fits.open(good) as hdul:
        del hdul["ICSRC"]
        hdul.writeto(path)
    cards = [("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", 8)]
    cards += [("NAXIS2", 100_000_000), ("PCOUNT", 0), ("GCOUNT", 1), ("TFIELDS", 1)]
    cards += [("TTYPE1", "id"), ("TFORM1", "K"), ("EXTNAME", "ICSRC")]
    return sparse_fits(path, [(fits.Header(cards), 800_000_000)], prefix=path.read_bytes())


def patch_cards(path: Path, key: str, card: str) -> Path:
    """Every header card ``key`` replaced by the raw 80 characters ``card`` (FITS allows
    values astropy will not write: a NaN)."""
    data = bytearray(path.read_bytes())
    for start in range(0, len(data), 80):
        if data[start : start + 8] == key.ljust(8).encode():
            data[start : start + 80] = card.ljust(80).encode("ascii")
    path.write_bytes(bytes(data))
    return path


def edited(path: Path, good: Path, edit) -> Path:
    with fits.open(good) as hdul:
        edit(hdul)
        hdul.writeto(path, output_verify="silentfix")
    return path


def changed(path: Path, exposure, **fields) -> Path:
    write_exposure(dataclasses.replace(exposure, **fields), path)
    return path


def gaussian_psf(size: int, fwhm: float) -> np.ndarray:
    c, s = size // 2, fwhm / 2.3548
    yy, xx = np.mgrid[:size, :size]
    psf = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * s * s))
    return (psf / psf.sum()).astype(np.float32)


def scaled_apcorr(apcorr: ApCorrMap, factor: float) -> ApCorrMap:
    terms = {n: ApCorrTerm(n, t.order, t.coeffs * factor, t.err) for n, t in apcorr.terms.items()}
    return ApCorrMap(terms, apcorr.width, apcorr.height)


# ---------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class World:
    base: Path
    inputs: Path  # the one input root
    outside: Path
    good: Path  # a simulated exposure inside the root
    expid: int
    store: Path  # its reference catalogue
    cases: dict[str, tuple[str, int, tuple[str, ...]]]  # name: (uri, event EXPID, roots)


#: name: (kind, a word of the reason). Every case is a failure at the read stage.
EXPECTED = {
    # where: schemes, relative paths, '..', outside the roots, links, not regular files
    "outside_root": ("refused", "outside"),
    "outside_root_missing": ("refused", "outside"),
    "dotdot": ("refused", ".."),
    "dotdot_missing": ("refused", ".."),
    "relative": ("refused", "absolute"),
    "relative_dotdot": ("refused", "absolute"),
    "etc_shadow": ("refused", "outside"),
    "etc_missing": ("refused", "outside"),
    "proc_self_environ": ("refused", "outside"),
    "proc_self_missing": ("refused", "outside"),
    "dev_zero": ("refused", "outside"),
    "dev_zero_inside_roots": ("refused", "regular"),
    "fifo": ("refused", "regular"),
    "socket": ("refused", "regular"),
    "directory": ("refused", "regular"),
    "symlink_out": ("refused", "outside"),
    "symlink_dangling_out": ("refused", "outside"),
    "symlink_to_dev_zero": ("refused", "outside"),
    "symlink_loop": ("refused", "loop"),
    "name_too_long": ("refused", "long"),
    "http": ("refused", "scheme"),
    "s3": ("refused", "scheme"),
    "file_uri_outside": ("refused", "outside"),
    "file_uri_remote_host": ("refused", "local"),
    "file_uri_encoded_dotdot": ("refused", ".."),
    "missing_inside": ("missing_file", "no such file"),
    "expid_mismatch": ("expid_mismatch", "EXPID"),
    # how big: declared in the headers, refused before any plane is read
    "sparse_25000_planes": ("limit", "max_image_pixels"),
    "huge_naxis3": ("limit", "max_image_pixels"),
    "compressed_25000_planes": ("limit", "max_image_pixels"),
    "compressed_tiles_mismatch": ("invalid_hdu", "cannot be read"),
    "memory_7000_planes": ("limit", "max_memory_bytes"),
    "psf_1001": ("limit", "max_psf_size"),
    "fwhm_400": ("limit", "max_psf_fwhm"),
    "fwhm_1500": ("limit", "max_psf_fwhm"),
    "header_20000_cards": ("limit", "max_header_cards"),
    "hdus_100": ("limit", "max_hdus"),
    "icsrc_100m_rows": ("limit", "max_table_bytes"),
    # what it says: plausible ranges and the contract
    "apcorr_1e300": ("implausible", "apcorr"),
    "apcorr_zero": ("implausible", "apcorr"),
    "exptime_1e300": ("implausible", "EXPTIME"),
    "exptime_0": ("invalid_key", "positive"),
    "exptime_negative": ("invalid_key", "positive"),
    "exptime_nan": ("invalid_key", "finite"),
    "mjd_absurd": ("implausible", "MJD-OBS"),
    "airmass_absurd": ("implausible", "AIRMASS"),
    "airmass_below_1": ("implausible", "AIRMASS"),
    "nan_planes": ("invalid_pixels", "non-finite"),
    "zero_size_planes": ("invalid_hdu", "no pixels"),
    "truncated": ("truncated", "truncated"),
    "not_fits": ("not_fits", "FITS"),
    "empty_file": ("not_fits", "FITS"),
    "wrong_bitpix": ("invalid_hdu", "float32"),
    "psf_zeros": ("invalid_psf", "sum"),
    "psf_nan": ("invalid_psf", "non-finite"),
}
#: Refused in the same words whether the path exists or not.
SAME_REASON = [
    ("outside_root", "outside_root_missing"),
    ("dotdot", "dotdot_missing"),
    ("etc_shadow", "etc_missing"),
    ("proc_self_environ", "proc_self_missing"),
    ("symlink_out", "symlink_dangling_out"),
]


def _where_cases(w: Path, inputs: Path, outside: Path, good: Path, expid: int) -> dict:
    """The events naming paths: (uri, EXPID, roots); the roots are ``inputs`` unless given."""
    os.mkfifo(inputs / "fifo.fits")
    (inputs / "sub.fits").mkdir()
    for name, target in (
        ("link.fits", outside / "good.fits"),
        ("dangling.fits", outside / "none.fits"),
        ("zero.fits", Path("/dev/zero")),
        ("loop.fits", inputs / "loop.fits"),
    ):
        (inputs / name).symlink_to(target)
    cases = {
        "outside_root": str(outside / "good.fits"),
        "outside_root_missing": str(outside / "none.fits"),
        "dotdot": f"{inputs}/../outside/good.fits",
        "dotdot_missing": f"{inputs}/../outside/none.fits",
        "relative": "good.fits",
        "relative_dotdot": "../../../etc/passwd",
        "etc_shadow": "/etc/shadow",
        "etc_missing": "/etc/no-such-file-anywhere",
        "proc_self_environ": "/proc/self/environ",
        "proc_self_missing": "/proc/self/no-such-file",
        "dev_zero": "/dev/zero",
        "fifo": str(inputs / "fifo.fits"),
        "socket": str(inputs / "socket.fits"),
        "directory": str(inputs / "sub.fits"),
        "symlink_out": str(inputs / "link.fits"),
        "symlink_dangling_out": str(inputs / "dangling.fits"),
        "symlink_to_dev_zero": str(inputs / "zero.fits"),
        "symlink_loop": str(inputs / "loop.fits"),
        "name_too_long": str(inputs / ("x" * 300 + ".fits")),
        "http": "http://127.0.0.1:9/good.fits",
        "s3": "s3://bucket/good.fits",
        "file_uri_outside": "file:///etc/shadow",
        "file_uri_remote_host": f"file://example.org{good}",
        "file_uri_encoded_dotdot": f"file://{inputs}/%2E%2E/outside/good.fits",
        "missing_inside": str(inputs / "none.fits"),
    }
    table = {name: (uri, expid, (str(inputs),)) for name, uri in cases.items()}
    table["dev_zero_inside_roots"] = ("/dev/zero", expid, (str(inputs), "/dev"))
    table["expid_mismatch"] = (str(good), expid + 1, (str(inputs),))
    return table


def _size_files(d: Path, good: Path, exposure) -> dict[str, Path]:
    """Files declaring more than [limits] allows (sparse: next to no disk)."""
    compressed, good_compressed = d / "compressed.fits", d / "good-compressed.fits"
    write_exposure(exposure, good_compressed, compress=True)
    shutil.copy(good_compressed, compressed)
    psf = exposure.psf
    return {
        "sparse_25000_planes": huge_planes(d / "sparse.fits", good, (25000, 25000)),
        "huge_naxis3": huge_planes(d / "naxis3.fits", good, (SIZE, SIZE, 100_000)),
        "compressed_25000_planes": patch_cards(
            patch_cards(compressed, "ZNAXIS1", "ZNAXIS1 = 25000"), "ZNAXIS2", "ZNAXIS2 = 25000"
        ),
        "compressed_tiles_mismatch": patch_cards(
            Path(shutil.copy(good_compressed, d / "tiles.fits")), "ZNAXIS1", "ZNAXIS1 = 25000"
        ),
        "memory_7000_planes": huge_planes(d / "memory.fits", good, (7000, 7000)),
        "psf_1001": changed(
            d / "psf1001.fits", exposure, psf=Psf(gaussian_psf(1001, 3.5), 1, 1, 3.5)
        ),
        "fwhm_400": changed(d / "fwhm400.fits", exposure, psf=dataclasses.replace(psf, fwhm=400.0)),
        "fwhm_1500": changed(
            d / "fwhm1500.fits", exposure, psf=dataclasses.replace(psf, fwhm=1500.0)
        ),
        "header_20000_cards": edited(
            d / "cards.fits",
            good,
            lambda h: [h[0].header.add_comment(f"{i}") for i in range(20000)],
        ),
        "hdus_100": edited(
            d / "hdus.fits",
            good,
            lambda h: h.extend(fits.ImageHDU(np.zeros((2, 2))) for _ in range(100)),
        ),
        "icsrc_100m_rows": huge_icsrc(d / "icsrc.fits", good),
    }


def _said_files(d: Path, good: Path, exposure) -> dict[str, Path]:
    """Files whose values are absurd, or that break the contract."""
    meta, psf = exposure.metadata, exposure.psf
    nan = np.full(exposure.image.shape, np.nan, np.float32)
    cut = d / "truncated.fits"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (d / "text.fits").write_text("SIMPLE? not at all\n" * 500)
    (d / "empty.fits").write_bytes(b"")
    return {
        "apcorr_1e300": changed(
            d / "ap1e300.fits", exposure, apcorr=scaled_apcorr(exposure.apcorr, 1e300)
        ),
        "apcorr_zero": changed(
            d / "ap0.fits", exposure, apcorr=scaled_apcorr(exposure.apcorr, 0.0)
        ),
        "exptime_1e300": changed(
            d / "t1e300.fits", exposure, metadata=dataclasses.replace(meta, exptime=1e300)
        ),
        "exptime_0": changed(
            d / "t0.fits", exposure, metadata=dataclasses.replace(meta, exptime=0.0)
        ),
        "exptime_negative": changed(
            d / "tneg.fits", exposure, metadata=dataclasses.replace(meta, exptime=-30.0)
        ),
        "exptime_nan": patch_cards(changed(d / "tnan.fits", exposure), "EXPTIME", "EXPTIME = NAN"),
        "mjd_absurd": changed(
            d / "mjd.fits", exposure, metadata=dataclasses.replace(meta, mjd_obs=1e9)
        ),
        "airmass_absurd": changed(
            d / "am.fits", exposure, metadata=dataclasses.replace(meta, airmass=1e6)
        ),
        "airmass_below_1": changed(
            d / "am0.fits", exposure, metadata=dataclasses.replace(meta, airmass=0.1)
        ),
        "nan_planes": changed(d / "nan.fits", exposure, image=nan, variance=nan),
        "zero_size_planes": edited(
            d / "zerosize.fits",
            good,
            lambda h: [
                setattr(h[n], "data", np.zeros((0, 0), np.float32)) for n in ("IMAGE", "VARIANCE")
            ],
        ),
        "truncated": cut,
        "not_fits": d / "text.fits",
        "empty_file": d / "empty.fits",
        "wrong_bitpix": changed(d / "int16.fits", exposure, image=exposure.image.astype(np.int16)),
        "psf_zeros": changed(
            d / "psf0.fits", exposure, psf=dataclasses.replace(psf, image=psf.image * 0)
        ),
        "psf_nan": changed(
            d / "psfnan.fits", exposure, psf=dataclasses.replace(psf, image=psf.image + np.nan)
        ),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    inputs, outside = base / "inputs", base / "outside"
    inputs.mkdir()
    outside.mkdir()
    paths = write_simulation(base / "sim", 1, (SIZE, SIZE), seed=1)
    good = inputs / "good.fits"
    shutil.copy(paths[0], good)
    shutil.copy(paths[0], outside / "good.fits")
    store = base / "store"
    assert core_main(["ingest-refcat", str(base / "sim" / "refcat.fits"), "--out", str(store)]) == 0
    exposure = read_exposure(good)
    expid = exposure.metadata.expid
    cases = _where_cases(base, inputs, outside, good, expid)
    files = {**_size_files(inputs, good, exposure), **_said_files(inputs, good, exposure)}
    cases.update({name: (str(path), expid, (str(inputs),)) for name, path in files.items()})
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(inputs / "socket.fits"))
    yield World(base, inputs, outside, good, expid, store, cases)
    listener.close()


FIGURES: dict[str, dict] = {}  # name: the outcome of its run (for the figures at the end)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_hostile_input_ends_as_a_typed_failure_bounded(world, forked, name):
    uri, expid, roots = world.cases[name]
    got = forked(uri, expid, roots, world.base / "out")
    FIGURES[name] = got
    kind, word = EXPECTED[name]
    assert got["roles"] == [FAILURES], got
    assert (got["stage"], got["error"]) == ("read", kind), got
    assert word.lower() in got["reason"].lower(), got
    assert got["seconds"] <= CASE_SECONDS, got
    assert got["rss_mb"] <= CASE_RSS_MB, got


def test_a_refused_path_says_the_same_whether_or_not_it_exists(world, forked):
    for name in ("outside_root", "symlink_out", "proc_self_environ"):  # they do exist
        assert os.path.exists(world.cases[name][0].replace("self", str(os.getpid()))), name
    for exists, missing in SAME_REASON:
        reasons = [forked(*world.cases[n], world.base / "out")["reason"] for n in (exists, missing)]
        assert reasons[0] == reasons[1], (exists, missing, reasons)


@pytest.mark.parametrize("scheme", ["path", "file_uri"])
def test_the_good_exposure_inside_the_roots_is_detected(world, forked, scheme):
    uri = str(world.good) if scheme == "path" else world.good.as_uri()
    got = forked(uri, world.expid, (str(world.inputs),), world.base / "out")
    FIGURES[f"control_{scheme}"] = got
    assert got["roles"] == ["detections"], got
    assert got["seconds"] <= CASE_SECONDS and got["rss_mb"] <= CASE_RSS_MB, got


def test_figures():
    """The table's figures (README, "Bounded and confined inputs")."""
    hostile = {k: v for k, v in FIGURES.items() if not k.startswith("control")}
    assert len(hostile) >= 30, sorted(FIGURES)
    slowest = max(hostile, key=lambda k: hostile[k]["seconds"])
    largest = max(hostile, key=lambda k: hostile[k]["rss_mb"])
    print(
        f"\n{len(hostile)} hostile cases: slowest {slowest} {hostile[slowest]['seconds']:.3f} s, "
        f"largest {largest} {hostile[largest]['rss_mb']:.0f} MB peak RSS"
    )
    for name in ("control_path", "control_file_uri"):
        if name in FIGURES:
            got = FIGURES[name]
            print(f"{name}: {got['seconds']:.3f} s, {got['rss_mb']:.0f} MB peak RSS")


# ---------------------------------------------------------------- beyond the detect step


def test_magzero_outside_its_plausible_range_is_not_ok(world):
    """What APCORR 1e300 and EXPTIME 1e300 gave before (both now refused at the read) is
    implausible; a MAGZERO outside ``[sanity] magzero`` leaves the exposure not "ok"."""
    for magzero in (777.57, -718.33):
        with pytest.raises(ImplausibleValueError, match="MAGZERO"):
            Config().sanity.check("magzero", magzero, "MAGZERO")
    root = world.base / "magzero"
    settings = StreamSettings(
        input_roots=(str(world.inputs),), refcat=str(world.store), output_root=str(root)
    )
    config = dataclasses.replace(Config(), sanity=SanityConfig(magzero=(0.0, 1.0)))
    ctx = runner.Context(settings, config, RedisReadModel(None), None, CALIBRATE)
    record = events.characterized_exposure_event(read_metadata(world.good), str(world.good))
    message = runner.Message(
        "calibstream.exposures", 0, 0, b"k", encode("characterized_exposure", record)
    )
    runner.run_chain(ctx, "detect", message)
    summary = read_summary(exposure_dir(root, world.expid))
    assert summary is not None and summary["status"] != "ok", summary
    assert summary["error"] == "implausible", summary
    assert "MAGZERO" in summary["reason"] and "[sanity] magzero" in summary["reason"], summary


def test_an_unreadable_input_is_the_machines_fault(world, monkeypatch):
    """EACCES or EIO while opening is the input store's fault (retried, then parked);
    astropy's own format errors carry no errno and stay the file's (not_fits)."""

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(world.good))

    monkeypatch.setattr(fits, "open", denied)
    with pytest.raises(PermissionError):
        read_exposure(world.good)
    assert failure_of(PermissionError(errno.EACCES, "x"), "detect").transient
    settings = StreamSettings(input_roots=(str(world.inputs),), output_root=str(world.base / "t"))
    ctx = runner.Context(settings, Config(), RedisReadModel(None), None, CALIBRATE)
    record = events.characterized_exposure_event(_metadata(world), str(world.good))
    message = runner.Message(
        "calibstream.exposures", 0, 0, b"k", encode("characterized_exposure", record)
    )
    with pytest.raises(TransientFailure, match="Permission denied"):
        runner.run(ctx, "detect", message)

    def corrupt(*args, **kwargs):
        raise OSError("Empty or corrupt FITS file")  # astropy's kind: no errno

    monkeypatch.setattr(fits, "open", corrupt)
    with pytest.raises(NotFitsError):
        read_exposure(world.good)


def _metadata(world: World) -> Metadata:
    return Metadata(expid=world.expid, visit=1, detector=0, band="r", mjd_obs=61000.0, exptime=30.0)


def test_input_roots_default_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_deployment(None).stream.input_roots == (str(tmp_path.resolve()),)
    config = tmp_path / "stream.toml"
    config.write_text('[stream]\ninput_roots = ["data", "/srv/../srv/in"]\n')
    assert load_deployment(config).stream.input_roots == (str(tmp_path / "data"), "/srv/in")
    assert StreamSettings().input_roots is None  # built in code: only regular files


def test_the_batch_command_confines_to_the_named_files_folder(world):
    from streams.batch import confined_to

    settings = StreamSettings(input_roots=("/nowhere",))
    ctx = runner.Context(settings, Config(), RedisReadModel(None), None, CALIBRATE)
    assert confined_to(world.good, ctx).settings.input_roots == (str(world.inputs),)


def test_sep_pixel_stack_is_sized_from_the_image():
    import sep

    from calibstream.config import DetectionConfig
    from calibstream.detection.detect import detect_sources
    from calibstream.errors import MeasurementError

    rng = np.random.default_rng(3)
    image = rng.standard_normal((2048, 2048)).astype(np.float32)
    config = DetectionConfig(filter="kernel", noise="global")
    detect_sources(image, 1.0, None, None, config)
    assert sep.get_extract_pixstack() == 2048 * 2048 // 8
    flat = np.full((1024, 1024), 100.0, np.float32)  # not background-subtracted
    with pytest.raises(MeasurementError, match="background-subtracted"):
        detect_sources(flat, 1.0, None, None, config)
