"""Fetching the Debian sources of English-German pairs, by package name at run time.

Three real, human-translated sources (see /work/shared/DATA.md), whose text mt_sources.py pairs:

- LibreOffice help (`libreoffice-help-en-us` + `libreoffice-help-de`): generated HTML pages, one per
  help topic, with the same relative path in both languages.
- Ding (`trans-de-en`): one dictionary entry per line, `German :: English`.
- DDTP: package descriptions from Debian's `Translation-de` / `Translation-en` indexes, fetched by
  a private `apt-get update` and paired by `Description-md5`.

The .deb files are downloaded with `apt-get download` into a raw folder once. Nothing from the
packages is installed, executed or unpickled: they are only unpacked with `dpkg -x` and read as text.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from layerdrop.data.cache import atomic_dir, sha256_file
from layerdrop.data.mt_sources import Pair, ddtp_pairs, ding_pairs, libreoffice_pairs
from layerdrop.utils.lock import file_lock

LIBREOFFICE_EN, LIBREOFFICE_DE = "libreoffice-help-en-us", "libreoffice-help-de"
DING = "trans-de-en"
DEBIAN_PACKAGES = (LIBREOFFICE_EN, LIBREOFFICE_DE, DING)
LIBREOFFICE_HELP = {
    LIBREOFFICE_EN: "usr/share/libreoffice/help/en-US",
    LIBREOFFICE_DE: "usr/share/libreoffice/help/de",
}
DING_FILE = "usr/share/trans/de-en"
DDTP_SUITE = "bookworm"  # pinned, so every machine pairs the same descriptions
DDTP_MIRROR = "http://deb.debian.org/debian"
DDTP_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_SOURCE = f"debian:{LIBREOFFICE_EN}+{LIBREOFFICE_DE}+{DING}+ddtp-{DDTP_SUITE}"
LICENSES = {
    "libreoffice": "MPL-2.0 (LibreOffice help content, debian/copyright of libreoffice-help-*)",
    "ding": "GPL-2+ (Ding dictionary, Frank Richter, TU Chemnitz)",
    "ddtp": "per package: each description is part of its package (see its debian/copyright); "
    "German translations by the Debian Description Translation Project",
}


# ---------------------------------------------------------------------------------------------------
# Fetching and unpacking


def _apt_options() -> list[str]:
    # As root, apt drops to the `_apt` user, which cannot write into our folders.
    return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(
            f"could not {what}; command `{' '.join(cmd)}` exited {result.returncode}:\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return result


def _cached_deb(name: str, raw_dir: Path) -> Path | None:
    found = sorted(raw_dir.glob(f"{name}_*.deb"))  # package names never contain '_'
    if len(found) > 1:
        raise RuntimeError(
            f"{raw_dir} holds {len(found)} versions of {name} ({[p.name for p in found]}); "
            "delete all but the one to use"
        )
    return found[0] if found else None


def fetch_debs(names: Iterable[str], raw_dir: Path) -> dict[str, Path]:
    """The .deb of each package in raw_dir, fetched with `apt-get download` only if absent."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    debs = {}
    for name in names:
        debs[name] = _cached_deb(name, raw_dir)
        if debs[name] is None:
            with file_lock(raw_dir / ".fetch.lock"):  # another process may be fetching it: wait, then look again
                debs[name] = _cached_deb(name, raw_dir) or _download_deb(name, raw_dir)
    return debs


def _download_deb(name: str, raw_dir: Path) -> Path:
    _run(["apt-get", *_apt_options(), "download", name], f"download Debian package {name!r}", raw_dir)
    deb = _cached_deb(name, raw_dir)
    if deb is None:
        raise RuntimeError(f"`apt-get download {name}` succeeded but left no {name}_*.deb in {raw_dir}")
    return deb


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "--field", str(deb), "Version"], f"read the version of {deb}").stdout.strip()


def unpack_deb(deb: Path, unpack_dir: Path) -> Path:
    """The unpacked tree of `deb` under unpack_dir (extracted once, into a temp dir then renamed)."""
    dest = Path(unpack_dir) / deb.stem
    if dest.is_dir():
        return dest
    with file_lock(Path(unpack_dir) / ".unpack.lock"):  # never two unpackings of one tree, one moving the other's away
        if not dest.is_dir():
            with atomic_dir(dest) as tmp:
                _run(["dpkg", "-x", str(deb), str(tmp)], f"unpack {deb}")
    return dest


# ---------------------------------------------------------------------------------------------------
# DDTP translation indexes


def _update_ddtp(root: Path, lists: Path, files: dict[str, Path], release: Path) -> None:
    """The private ``apt-get update`` of ``fetch_ddtp``, only where its files are not all there yet."""
    if all(path.is_file() for path in [*files.values(), release]):
        return
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(
        f"deb [signed-by={DDTP_KEYRING}] {DDTP_MIRROR} {DDTP_SUITE} main\n"
    )
    cmd = ["apt-get", *_apt_options(), "update"]
    for option in (
        f"Dir::State::Lists={lists}",
        f"Dir::Cache={root / 'cache'}",
        f"Dir::Etc::SourceList={root / 'sources.list'}",
        "Dir::Etc::SourceParts=/nonexistent",
        "Acquire::Languages=en,de",
        "Acquire::GzipIndexes=false",  # plain text files, no decompressor needed to read them
        "Acquire::IndexTargets::deb::Packages::DefaultEnabled=false",  # only the translations
    ):
        cmd += ["-o", option]
    _run(cmd, f"fetch the DDTP translations of Debian {DDTP_SUITE}")
    missing = [str(path) for path in [*files.values(), release] if not path.is_file()]
    if missing:
        raise RuntimeError(f"`{' '.join(cmd)}` succeeded but did not write {missing}")


def fetch_ddtp(raw_dir: Path) -> tuple[dict[str, Path], dict]:
    """Translation-en and Translation-de of Debian `DDTP_SUITE` main, with their release metadata.

    A private `apt-get update` (own sources, lists and cache folders under raw_dir/ddtp) leaves the
    system's apt state untouched; apt checks the files against the signed InRelease. Fetched once.
    """
    root = Path(raw_dir) / "ddtp"
    lists = root / "lists"
    base = f"{DDTP_MIRROR.split('://', 1)[1].replace('/', '_')}_dists_{DDTP_SUITE}"
    files = {lang: lists / f"{base}_main_i18n_Translation-{lang}" for lang in ("en", "de")}
    release = lists / f"{base}_InRelease"
    with file_lock(Path(raw_dir) / ".fetch.lock"):  # apt refuses a second update of one lists folder at once
        _update_ddtp(root, lists, files, release)
    fields = dict(_release_fields(release.read_text(encoding="utf-8")))
    provenance = {
        "suite": DDTP_SUITE,
        "mirror": DDTP_MIRROR,
        "release_version": fields.get("Version"),
        "release_date": fields.get("Date"),
        "sha256": {f"Translation-{lang}": sha256_file(path) for lang, path in files.items()},
    }
    return files, provenance


def _release_fields(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            yield key, value.strip()


# ---------------------------------------------------------------------------------------------------
# All Debian sources together


def package_provenance(deb: Path) -> dict:
    return {
        "version": deb_version(deb),
        "deb": deb.name,
        "bytes": deb.stat().st_size,
        "sha256": sha256_file(deb),
    }


def debian_pairs(
    raw_dir: Path,
    *,
    include_ddtp: bool = True,
    libreoffice_pages: int | None = None,
    ding_lines: int | None = None,
) -> tuple[list[Pair], dict]:
    """Raw pairs of every Debian source (LibreOffice help, Ding, DDTP) and their provenance.

    Downloads (once) into raw_dir and unpacks into raw_dir/unpacked. `libreoffice_pages` and
    `ding_lines` take only the start of those sources, for quick tests; the source id says so.
    """
    raw_dir = Path(raw_dir)
    debs = fetch_debs(DEBIAN_PACKAGES, raw_dir)
    trees = {name: unpack_deb(deb, raw_dir / "unpacked") for name, deb in debs.items()}
    help_roots = [trees[name] / LIBREOFFICE_HELP[name] for name in (LIBREOFFICE_EN, LIBREOFFICE_DE)]
    lo, lo_stats = libreoffice_pairs(*help_roots, limit_pages=libreoffice_pages)
    with open(trees[DING] / DING_FILE, encoding="utf-8") as lines:
        ding, ding_stats = ding_pairs(itertools.islice(lines, ding_lines))
    sources = {
        "libreoffice": {
            "packages": {name: package_provenance(debs[name]) for name in (LIBREOFFICE_EN, LIBREOFFICE_DE)},
            "format": "generated HTML help pages; <p>/<h1-6> paired by element id within the same page",
            "license": LICENSES["libreoffice"],
            "extracted": lo_stats,
        },
        "ding": {
            "packages": {DING: package_provenance(debs[DING])},
            "format": f"{DING_FILE}: 'German :: English' per entry, '|' between parallel sub-entries",
            "license": LICENSES["ding"],
            "extracted": ding_stats,
        },
    }
    pairs = lo + ding
    if include_ddtp:
        files, ddtp_provenance = fetch_ddtp(raw_dir)
        with open(files["en"], encoding="utf-8") as en, open(files["de"], encoding="utf-8") as de:
            ddtp, ddtp_stats = ddtp_pairs(en, de)
        sources["ddtp"] = {
            **ddtp_provenance,
            "format": "apt Translation-en/-de indexes; synopsis and paragraphs paired by Description-md5",
            "license": LICENSES["ddtp"],
            "extracted": ddtp_stats,
        }
        pairs += ddtp
    source = DEBIAN_SOURCE if include_ddtp else DEBIAN_SOURCE.rsplit("+", 1)[0]
    if libreoffice_pages is not None or ding_lines is not None:
        source += f":subset(libreoffice_pages={libreoffice_pages},ding_lines={ding_lines})"
    provenance = {"source": source, "license": "per source, see sources", "sources": sources}
    return pairs, provenance
