"""The fixed phrases of check, use, hint, predict and the progress table, in English and Korean."""
import string

from course_utils import check, hint, progress_table, reference
from course_utils.harness import progress
from course_utils.harness.exercises import checking_references
from course_utils.harness.phrases import PHRASES, say


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_phrase_exists_in_every_language_with_the_same_fields():
    for lang, phrases in PHRASES.items():
        assert set(phrases) == set(PHRASES["en"]), lang
        for key, template in phrases.items():
            assert _fields(template) == _fields(PHRASES["en"][key]), (lang, key)


def test_korean_is_chosen_by_course_lang_and_anything_else_is_english(monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "ko")
    assert say("predict.right") == "맞았습니다"
    monkeypatch.setenv("COURSE_LANG", "xx")
    assert say("predict.right") == "right"


def test_check_hint_and_the_table_speak_korean(monkeypatch, progress_file):
    monkeypatch.setenv("COURSE_LANG", "ko")
    with checking_references():
        result = check("1.2", reference("1.2"), display=False)
    assert "모두 통과했습니다" in result.message
    assert hint("5.1", display=False).startswith("💡 5.1 힌트 1/")
    assert "통과)" in progress_table() and "진도 파일" in progress_table()


def test_a_hint_is_korean_only_while_translated_from_the_current_english(monkeypatch, progress_file):
    from course_utils.harness import translate
    from course_utils.harness.registry import registry

    first = registry()["5.1"].hints[0]
    current = translate.Block("5.1/hint1", translate.english_hash(first), "첫 번째 힌트")
    monkeypatch.setattr(translate, "_hint_blocks", lambda lang: {"5.1/hint1": current})
    monkeypatch.setenv("COURSE_LANG", "ko")
    assert hint("5.1", display=False).endswith("첫 번째 힌트")
    progress.reset("5.1")
    current.en_hash = "0" * 10  # the English hint changed since: show the English, never a stale translation
    assert hint("5.1", display=False).endswith(first)
