"""The reproduction gallery, ``docs/reproductions.md``: each seed paper's claim as data
(:mod:`.claims`), judged by a criterion fixed in code (:mod:`.verdicts`) on the report of its sweep
(:mod:`.sweeps`), written as a page with its figures (:mod:`.page`)."""
