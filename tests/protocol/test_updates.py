"""Update bundles: a device accepts exactly what the update key signed, for its kind and version."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from protocol.signing import generate_key
from protocol.updates import BundleError, build_bundle, open_bundle, read_manifest, version_key


def _src(tmp_path: Path) -> Path:
    (tmp_path / "src" / "edge").mkdir(parents=True)
    (tmp_path / "src" / "edge" / "__init__.py").write_text('__version__ = "0.2.0"\n')
    (tmp_path / "src" / "edge" / "agent.py").write_text("print('agent')\n")
    return tmp_path / "src"


def _retar(data: bytes, change: dict[str, bytes | None]) -> bytes:
    """The same bundle with members replaced (bytes), removed (None) or added."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        names = [m.name for m in src.getmembers()]
        for name in [*names, *(n for n in change if n not in names)]:
            body = change.get(name, src.extractfile(name).read() if name in names else None)  # type: ignore[union-attr]
            if body is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(body)
            dst.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_a_signed_bundle_opens_with_its_files(tmp_path: Path) -> None:
    key = generate_key()
    data = build_bundle(_src(tmp_path), kind="gateway", version="0.2.0", key=key, min_version="0.1.0")
    manifest, files = open_bundle(data, key.public_key(), kind="gateway", installed="0.1.0")
    assert manifest.version == "0.2.0" and sorted(files) == ["edge/__init__.py", "edge/agent.py"]
    assert files["edge/agent.py"] == b"print('agent')\n"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"files/edge/agent.py": b"import os; os.system('x')\n"}, "bad_hash"),
        ({"files/edge/agent.py": None}, "missing_file"),
        ({"files/edge/extra.py": b"1"}, "unexpected_file"),
        ({"manifest.sig": b"AAAA"}, "bad_signature"),
        ({"manifest.json": None}, "malformed"),
    ],
)
def test_tampered_bundles_are_refused(tmp_path: Path, change: dict[str, bytes | None], reason: str) -> None:
    key = generate_key()
    data = _retar(build_bundle(_src(tmp_path), kind="gateway", version="0.2.0", key=key), change)
    with pytest.raises(BundleError) as err:
        open_bundle(data, key.public_key())
    assert err.value.reason == reason


def test_kind_key_and_minimum_version(tmp_path: Path) -> None:
    key = generate_key()
    data = build_bundle(_src(tmp_path), kind="gateway", version="0.3.0", key=key, min_version="0.2.0")
    for kw, reason in (
        ({"kind": "manhole_node"}, "wrong_kind"),
        ({"installed": "0.1.9"}, "too_old"),
    ):
        with pytest.raises(BundleError) as err:
            open_bundle(data, key.public_key(), **kw)  # type: ignore[arg-type]
        assert err.value.reason == reason
    with pytest.raises(BundleError) as err:
        open_bundle(data, generate_key().public_key())
    assert err.value.reason == "bad_signature"
    assert open_bundle(data, key.public_key(), installed="0.2.5")[0].version == "0.3.0"  # 0.2.5 ≥ 0.2.0
    assert version_key("0.10.0") > version_key("0.9.3")
    with pytest.raises(BundleError):
        read_manifest(b"not a tar")


def test_an_older_bundle_installs_only_as_a_signed_downgrade_and_never_after_it_expired(tmp_path: Path) -> None:
    """Anti-rollback: whoever holds the broker replays an older, validly signed bundle; the device refuses it."""
    key = generate_key()
    src = _src(tmp_path)
    old = build_bundle(src, kind="gateway", version="0.3.0", key=key)
    with pytest.raises(BundleError) as err:
        open_bundle(old, key.public_key(), installed="0.10.0")  # 0.3 < 0.10, numerically
    assert err.value.reason == "rollback"
    with pytest.raises(BundleError) as err:
        open_bundle(old, key.public_key(), installed="0.3.0-rc2")  # not newer either
    assert err.value.reason == "rollback"
    back = build_bundle(src, kind="gateway", version="0.3.0", key=key, downgrade=True)
    assert open_bundle(back, key.public_key(), installed="0.10.0")[0].downgrade is True
    brief = build_bundle(src, kind="gateway", version="0.4.0", key=key, valid_days=1)
    manifest = open_bundle(brief, key.public_key(), now_ms=int(time.time() * 1000))[0]
    with pytest.raises(BundleError) as err:
        open_bundle(brief, key.public_key(), now_ms=manifest.expires_ts + 1)
    assert err.value.reason == "expired"
