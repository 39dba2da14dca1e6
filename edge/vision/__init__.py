"""Gate vision: LiteRT face detection (BlazeFace), alignment and embedding (SFace), 1:N gallery."""
