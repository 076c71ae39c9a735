"""The reproduction gallery, ``docs/reproductions.md``: each seed paper's claim as data
(:mod:`.claims`), judged by a criterion fixed in code (:mod:`.criteria`, :mod:`.collapse_criteria`)
returning a verdict (:mod:`.verdicts`) on the report of its sweep (:mod:`.sweeps`), written by the
section writers (:mod:`.sections`) as a page with its figures (:mod:`.page`)."""
