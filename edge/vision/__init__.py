"""Gate vision: LiteRT face detection (BlazeFace), alignment and embedding (SFace), 1:N gallery, quality gates,
liveness and the gate pipeline. Processes running it should set ``OPENBLAS_NUM_THREADS=1`` before numpy loads
(the ``civicedge`` command does): OpenBLAS's spinning threads otherwise slow LiteRT down by half."""
