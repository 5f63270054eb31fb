"""Caption language: what the tags say, and whether a caption says only that.

Tag hygiene and roles (`tagging`, `tagroles`), word handling (`words`, `text`), the
deterministic composer (`compose`), the verifier (`verify`) and corpus quality figures
(`quality`). Nothing here imports a stage module.
"""
