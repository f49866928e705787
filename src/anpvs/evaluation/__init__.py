"""Evaluation: clean, white-box and black-box accuracy, vulnerability and efficiency (:mod:`.evaluate`), the
sanity checks of an evaluation (:mod:`.checks`), tables in the paper's layout (:mod:`.tables`) and the paper's own
numbers (:mod:`.paper_results`)."""
