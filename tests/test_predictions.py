"""Predict, then run: questions, the recorded prediction, the comparison, and the notebooks that ask them."""
import re

import nbformat
import pytest

from course_utils.chapters import CHAPTERS
from course_utils.harness import REPO_ROOT, predictions
from course_utils.harness.predictions import commit, predict, questions, recorded, reveal

SAMPLE = {
    "9.a": {"choices": ["grows", "shrinks"], "en": {"question": "Which way?", "why": "It {measured} by {k:.1f}."},
            "ko": {"question": "어느 쪽?", "why": "{measured}: {k:.1f}", "choices": ["커진다", "작아진다"]}},
    "9.b": {"unit": "x", "en": {"question": "How much?", "why": "Measured {measured:.2f}."},
            "ko": {"question": "얼마나?", "why": "측정 {measured:.2f}."}},
}
USE = re.compile(r"\b(predict|reveal)\(\s*\"([^\"]+)\"")


@pytest.fixture
def sample(monkeypatch, progress_file):
    monkeypatch.setattr(predictions, "questions", lambda: SAMPLE)
    monkeypatch.delenv("COURSE_LANG", raising=False)


def test_a_choice_is_recorded_compared_and_then_frozen(sample, capsys):
    predict("9.a")
    asked = capsys.readouterr().out
    assert "Which way?" in asked and "(a) grows" in asked and "(b) shrinks" in asked
    commit("9.a", "shrinks")
    assert recorded("9.a") == "shrinks"
    reveal("9.a", "grows", k=2.0)
    shown = capsys.readouterr().out
    assert "Measured (9.a): grows" in shown and "You predicted: shrinks (not what the measurement says)" in shown
    assert "It grows by 2.0." in shown
    with pytest.raises(ValueError, match="already compared"):
        commit("9.a", "grows")


def test_a_number_is_right_within_the_factor(sample, capsys):
    commit("9.b", 3)
    reveal("9.b", 5.0)
    assert "within 2x of it" in capsys.readouterr().out
    predictions._update("9.b", revealed=False)
    commit("9.b", 11)
    reveal("9.b", 5.0)
    assert "not within 2x" in capsys.readouterr().out


def test_without_a_prediction_the_answer_is_shown_and_nothing_is_frozen(sample, capsys):
    reveal("9.a", "grows", k=1.0)
    assert "did not commit" in capsys.readouterr().out
    commit("9.a", "grows")  # still allowed: nothing was compared


def test_bad_answers_are_refused_with_the_choices(sample):
    with pytest.raises(ValueError, match="choose one of"):
        commit("9.a", "sideways")
    with pytest.raises(ValueError, match="wants a number"):
        commit("9.b", "a lot")
    with pytest.raises(KeyError, match="no prediction question"):
        predict("9.z")


def test_korean_edition_asks_in_korean_and_records_the_english_choice(sample, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_LANG", "ko")
    predict("9.a")
    assert "예측 (9.a): 어느 쪽?" in capsys.readouterr().out
    commit("9.a", "작아진다")
    assert recorded("9.a") == "shrinks"
    reveal("9.a", "grows", k=1.0)
    assert "여러분의 예측: 작아진다" in capsys.readouterr().out


def test_every_question_has_both_languages():
    for qid, spec in questions().items():
        for lang in ("en", "ko"):
            assert spec[lang]["question"] and spec[lang]["why"], (qid, lang)
        if "choices" in spec:
            assert len(spec["choices"]) >= 2, qid
            assert len(spec["ko"].get("choices", spec["choices"])) == len(spec["choices"]), qid


def test_each_question_is_asked_then_revealed_in_its_own_chapter():
    used = {}
    for chapter in CHAPTERS:
        nb = nbformat.read(REPO_ROOT / chapter.notebook, as_version=4)
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        calls = [(m.start(), m[1], m[2]) for m in USE.finditer(source)]
        for qid in {qid for _, _, qid in calls}:
            assert qid.startswith(chapter.exercise_prefix), f"{qid} is asked in {chapter.notebook.name}"
            asked = [pos for pos, kind, q in calls if q == qid and kind == "predict"]
            shown = [pos for pos, kind, q in calls if q == qid and kind == "reveal"]
            assert len(asked) == 1 and len(shown) == 1 and asked[0] < shown[0], qid
            used[qid] = chapter.number
    assert set(used) == set(questions()), "every question is asked somewhere, and only defined ones are"
    for chapter in CHAPTERS[1:]:  # chapter 0 is the start-here page: no experiment to predict
        assert list(used.values()).count(chapter.number) >= 2, f"chapter {chapter.number}: at least two predictions"
