"""The same simulated exposure calibrated against its reference catalogue written four ways:
the contract's columns, Gaia DR3's columns as Parquet, an LSST-style HTM refcat and a HATS
catalogue (read in place). One configuration serves them all (the Gaia-named ones through
the colour-term library of ``gaia_dr3``); WCS and MAGZERO agree within 0.1 mas and 0.1 mmag."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from refcat_forms import contract_columns, gaia_dr3_table, write_gaia_parquet, write_hats
from refcat_forms import write_lsst_htm as write_htm

from streams.cli import main

CONFIG = """
[colorterms.gaia_dr3.r]
primary = "phot_g_mean"
secondary = "phot_rp_mean"
c1 = 0.04
"""


@pytest.fixture(scope="module")
def four_ways(tmp_path_factory):
    root = tmp_path_factory.mktemp("four")
    sim = root / "sim"
    assert main(["simulate", str(sim), "--n", "1", "--size", "1536", "1536", "--seed", "21"]) == 0
    cols = contract_columns(Table.read(sim / "refcat.fits"))
    (root / "config.toml").write_text(CONFIG)
    stores = {
        "contract": root / "contract",
        "gaia-dr3 parquet": root / "gaia_dr3",  # the store's name: its folder's
        "lsst htm": root / "lsst",
        "hats in place": write_hats(gaia_dr3_table(cols), root / "hats"),  # obs_collection
    }
    sources = {
        "contract": sim / "refcat.fits",
        "gaia-dr3 parquet": write_gaia_parquet(cols, root / "gaia.parquet"),
        "lsst htm": write_htm(cols, root / "htm"),
    }
    for key, source in sources.items():
        assert main(["ingest-refcat", str(source), "--out", str(stores[key])]) == 0
    exposure = sorted(sim.glob("exp_*[0-9].fits"))[0]
    folders = {}
    for key, store in stores.items():
        out = root / f"out-{key.replace(' ', '-')}"
        args = ["calibrate", str(exposure), "--refcat", str(store), "--out", str(out)]
        assert main([*args, "--config", str(root / "config.toml")]) == 0, key
        folders[key] = next((out / "exposures").iterdir())
    return folders


def test_wcs_and_magzero_agree_within_a_tenth_of_a_mas_and_mmag(four_ways):
    headers = {k: fits.getheader(f / "calexp.fits") for k, f in four_ways.items()}
    base = headers["contract"]
    x, y = np.meshgrid(np.linspace(0, 1535, 9), np.linspace(0, 1535, 9))
    ra0, dec0 = WCS(base).all_pix2world(x, y, 0)
    print()
    for key, header in headers.items():
        ra, dec = WCS(header).all_pix2world(x, y, 0)
        sep_mas = np.hypot((ra - ra0) * np.cos(np.radians(dec0)), dec - dec0).max() * 3.6e6
        dmag = abs(header["MAGZERO"] - base["MAGZERO"]) * 1e3
        print(
            f"{key:17s} MAGZERO {header['MAGZERO']:.6f} (Δ {dmag:.2e} mmag)  "
            f"ASTRMS {header['ASTRMS']:.3f} mas  WCS Δ max {sep_mas:.2e} mas  "
            f"COLORTERM2 {header['COLORTERM2']}"
        )
        assert sep_mas < 0.1, key
        assert dmag < 0.1, key
        assert header["ASTNMATCH"] == base["ASTNMATCH"] and header["MAGZERO_NOBJ"] > 10, key


def test_matches_name_each_catalogues_bands(four_ways):
    gaia = Table.read(four_ways["hats in place"] / "matches.parquet")
    lsst = Table.read(four_ways["lsst htm"] / "matches.parquet")
    assert "ref_phot_g_mean_mag" in gaia.colnames and "ref_r_mag" in lsst.colnames
    assert np.allclose(
        np.sort(np.asarray(gaia["ref_phot_g_mean_mag"])),
        np.sort(np.asarray(lsst["ref_r_mag"])),
        atol=1e-9,
    )
