"""The course's fixed phrases (check, use, hint, predict, the progress table) in English and Korean.

The language is ``COURSE_LANG`` (``setup(lang="ko")`` in the Korean notebooks sets it); anything but a known language
falls back to English. Diagnoses that describe a learner's output (``compare``) stay English: they quote names, shapes
and numbers, and a half-translated sentence reads worse than an English one.
"""
from __future__ import annotations

import os

PHRASES: dict[str, dict[str, str]] = {
    "en": {
        "hint.none": "💡 {id} {title}: this exercise has no hints; its docstring is the whole contract.",
        "hint.next": "💡 {id} hint {n} of {total}: {hint}",
        "hint.all": "💡 {id}: all {total} hints shown already:",
        "check.passed": "✅ {label}: passed all {n} cases.",
        "check.todo": "⏳ {label}: not implemented yet - replace `raise NotImplementedError` with your code "
                      "and run this cell again.",
        "check.hint": "Hint: {hint}",
        "use.reference": "→ {id}: using the reference `{name}` from solutions",
        "use.not_passed": "→ {id}: using the reference `{name}` from solutions (yours has not passed yet)",
        "use.yours": "→ {id}: using your `{name}`",
        "use.earlier": "→ {id}: using your `{name}` (passed earlier, re-checked now)",
        "use.fallback": "→ {id}: using the reference `{name}` from solutions ({why})",
        "use.none_recorded": "no passing version of yours recorded",
        "use.failed_again": "yours from the progress file did not pass again:",
        "table.chapter": "{heading}  ({done}/{total} passed)",
        "table.row": "attempts: {attempts}",
        "table.hints": ", hints: {taken}/{total}",
        "table.predictions": "  predictions: {made} made, {right} right of {revealed} compared",
        "table.file": "(progress file: {path})",
        "predict.ask": "Predict ({id}): {question}",
        "predict.number": "  (a number{unit})",
        "predict.unit": ", in {unit}",
        "predict.commit": "Commit your answer before you run the experiment below; the cell after it compares.",
        "predict.measured": "Measured ({id}): {value}",
        "predict.none": "You did not commit a prediction above (commit one, then run this cell again to compare).",
        "predict.said": "You predicted: {answer} ({judged}).",
        "predict.right": "right",
        "predict.wrong": "not what the measurement says",
        "predict.within": "within {factor:g}x of it",
        "predict.outside": "not within {factor:g}x of it",
        "predict.button": "Commit",
        "predict.recorded": "recorded: {answer}",
        "predict.late": "prediction {id} was already compared with the measurement; it stays as it was",
    },
    "ko": {
        "hint.none": "💡 {id} {title}: 이 연습 문제에는 힌트가 없습니다. docstring이 계약의 전부입니다.",
        "hint.next": "💡 {id} 힌트 {n}/{total}: {hint}",
        "hint.all": "💡 {id}: 힌트 {total}개를 이미 모두 보았습니다:",
        "check.passed": "✅ {label}: {n}개 케이스를 모두 통과했습니다.",
        "check.todo": "⏳ {label}: 아직 구현하지 않았습니다 - `raise NotImplementedError`를 여러분의 코드로 바꾸고 "
                      "이 셀을 다시 실행하세요.",
        "check.hint": "힌트: {hint}",
        "use.reference": "→ {id}: solutions의 참조 구현 `{name}` 사용",
        "use.not_passed": "→ {id}: solutions의 참조 구현 `{name}` 사용 (여러분의 코드가 아직 통과하지 않았습니다)",
        "use.yours": "→ {id}: 여러분의 `{name}` 사용",
        "use.earlier": "→ {id}: 여러분의 `{name}` 사용 (이전에 통과했고, 지금 다시 확인했습니다)",
        "use.fallback": "→ {id}: solutions의 참조 구현 `{name}` 사용 ({why})",
        "use.none_recorded": "통과한 여러분의 코드가 기록되어 있지 않습니다",
        "use.failed_again": "진도 파일에 있던 여러분의 코드가 다시 통과하지 못했습니다:",
        "table.chapter": "{heading}  ({done}/{total} 통과)",
        "table.row": "시도: {attempts}",
        "table.hints": ", 힌트: {taken}/{total}",
        "table.predictions": "  예측: {made}개 확정, 비교한 {revealed}개 중 {right}개 맞음",
        "table.file": "(진도 파일: {path})",
        "predict.ask": "예측 ({id}): {question}",
        "predict.number": "  (숫자{unit})",
        "predict.unit": ", 단위 {unit}",
        "predict.commit": "아래 실험을 실행하기 전에 답을 확정하세요. 실험 다음 셀이 측정값과 비교합니다.",
        "predict.measured": "측정값 ({id}): {value}",
        "predict.none": "위에서 예측을 확정하지 않았습니다 (확정한 뒤 이 셀을 다시 실행하면 비교합니다).",
        "predict.said": "여러분의 예측: {answer} ({judged}).",
        "predict.right": "맞았습니다",
        "predict.wrong": "측정 결과와 다릅니다",
        "predict.within": "측정값의 {factor:g}배 이내",
        "predict.outside": "측정값의 {factor:g}배 밖",
        "predict.button": "확정",
        "predict.recorded": "기록됨: {answer}",
        "predict.late": "예측 {id}는 이미 측정값과 비교했으므로 바꿀 수 없습니다",
    },
}


def language() -> str:
    """The language of the fixed phrases: ``COURSE_LANG`` when the course has it, else English."""
    lang = os.environ.get("COURSE_LANG", "en")
    return lang if lang in PHRASES else "en"


def say(key: str, **values) -> str:
    """The phrase ``key`` in the current language, formatted with ``values``."""
    return PHRASES[language()][key].format(**values)
