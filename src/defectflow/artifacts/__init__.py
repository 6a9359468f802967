"""Artifacts that cross stages: each module holds one artifact's pydantic model (the source of
its JSON Schema) and its validated, atomic read/write. Stages import artifacts, never each
other; the delivery path (``defectflow infer``) imports artifacts and no training code."""
