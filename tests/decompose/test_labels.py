from __future__ import annotations

from workbench.decompose.labels import candidate_label, contrastive_words, short, words


def test_words_drop_function_words_and_punctuation() -> None:
    assert words("The Bride, and THE groom's vows!") == ["bride", "groom's", "vows"]


def test_contrastive_words_rise_over_the_unsteered_texts() -> None:
    steered = ["the wedding cake and the bride", "a wedding dress for the bride", "rain today"]
    unsteered = ["the cake was fine", "a dress for today", "rain today"]
    # "wedding" and "bride" rise (2 vs 0); "rain" and "today" do not rise; "cake" once only.
    assert contrastive_words(steered, unsteered) == ["bride", "wedding"]
    assert contrastive_words(steered, unsteered, min_count=3) == []
    assert contrastive_words(steered, steered) == []


def test_labels_read_as_words_then_a_document() -> None:
    doc = "The bride walked slowly down the aisle on her father's arm"
    assert candidate_label("+c003", ["wedding", "bride"], doc, ["x"]) == (
        "+c003: wedding, bride | doc: The bride walked slowly down the aisle on …"
    )
    assert candidate_label("-c001", [], None, [" the", "\n"]) == (
        "-c001: no new words (tokens: the, '\\n')"
    )
    assert short("one two", 8) == "one two"
