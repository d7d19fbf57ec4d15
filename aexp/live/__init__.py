"""The scientist in the loop: the operator's channel to a running campaign (:mod:`.channel`), the
stagnation guidance (:mod:`.stagnation`) and the live page (:mod:`.app`)."""
