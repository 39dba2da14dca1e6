"""``civicedge vision …``: enrol residents from photos and identify a photo, for technicians and debugging."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Gate vision: enrol and identify faces.", no_args_is_help=True)
GalleryOpt = Annotated[Path, typer.Option("--gallery", help="encrypted gallery file")]
SECRET_ENV = "CE_DEVICE_SECRET"


def _open(gallery: Path):  # type: ignore[no-untyped-def]
    from edge.vision.gallery import Gallery, GalleryLocked

    secret = os.environ.get(SECRET_ENV)
    if not secret:
        typer.echo(f"error: set {SECRET_ENV} to this device's secret (the gallery is encrypted with it)", err=True)
        raise typer.Exit(2)
    try:
        return Gallery(gallery, secret.encode())
    except GalleryLocked as exc:
        typer.echo(f"error: {exc}; use the secret of the device that wrote it", err=True)
        raise typer.Exit(2) from None


def _faces(paths: list[Path]):  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder

    det, emb = FaceDetector(), Embedder()
    for p in paths:
        try:
            rgb = np.asarray(Image.open(p).convert("RGB"))
        except (OSError, UnidentifiedImageError):
            typer.echo(f"error: {p} is not a readable image", err=True)
            raise typer.Exit(2) from None
        faces = det.detect(rgb)
        yield p, (emb.embed(rgb, det.refine(rgb, faces[0])) if faces else None), len(faces)


@app.command()
def enroll(
    name: Annotated[str, typer.Argument(help="resident id")],
    images: Annotated[list[Path], typer.Argument(help="one or more photos of the resident")],
    gallery: GalleryOpt = Path("var/gallery.db"),
    unit: Annotated[str | None, typer.Option(help="flat / unit number")] = None,
) -> None:
    """Enrol a resident from photos (several help: lighting, glasses)."""
    g = _open(gallery)
    embs = []
    for p, e, n in _faces(images):
        if e is None:
            typer.echo(f"warning: no face in {p}; skipped", err=True)
            continue
        if n > 1:
            typer.echo(f"note: {n} faces in {p}; used the largest", err=True)
        embs.append(e)
    if not embs:
        typer.echo("error: no usable face in the photos; nothing enrolled", err=True)
        raise typer.Exit(1)
    g.enroll(name, embs, unit=unit)
    typer.echo(f"enrolled {name} with {len(embs)} embedding(s); gallery has {len(g)} resident(s)")


@app.command()
def identify(
    image: Annotated[Path, typer.Argument(help="photo to identify")],
    gallery: GalleryOpt = Path("var/gallery.db"),
) -> None:
    """Print the decision and score for the largest face in a photo; exit 1 when nobody matches."""
    g = _open(gallery)
    ((_, e, _n),) = list(_faces([image]))
    if e is None:
        typer.echo("no face found: ask the person to look at the camera")
        raise typer.Exit(1)
    m = g.search(e)
    who = m.resident_id or "nobody"
    typer.echo(f"{who}  score {m.score:.3f}  second {m.second:.3f}  ({m.reason})")
    raise typer.Exit(0 if m.resident_id else 1)
