"""The course's HTML views are readable in JupyterLab's light and dark themes (WCAG AA, 4.5:1).

Every element of a view that holds text and sets a colour or a background is checked against both themes: a colour
given as a JupyterLab variable is resolved as that theme resolves it, a missing colour is the theme's text colour,
a missing background is the theme's page."""
import re

import pytest
import torch

from course_utils import losses, sampling

# JupyterLab 4's values (its theme-light / theme-dark CSS), over the page background each alpha is blended on
THEMES = {
    "light": {"page": (255, 255, 255), "text": (0, 0, 0, 0.87), "--jp-content-font-color2": (0, 0, 0, 0.72)},
    "dark": {"page": (17, 17, 17), "text": (255, 255, 255, 1.0), "--jp-content-font-color2": (255, 255, 255, 0.72)},
}
TEXT_ELEMENT = re.compile(r"<(span|div|td|pre|b)\b[^>]*style=(['\"])(.*?)\2[^>]*>([^<]*\S[^<]*)")


def _rgb(value: str, theme: dict, page: tuple) -> tuple:
    value = value.strip()
    if value.startswith("var("):
        name = value[4:].split(",")[0].strip()
        r, g, b, a = theme[name]
        return tuple(round(a * c + (1 - a) * p) for c, p in zip((r, g, b), page))
    value = value.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4))


def _luminance(rgb: tuple) -> float:
    linear = [(c / 255) / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: tuple, b: tuple) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _properties(style: str) -> dict:
    return dict(part.split(":", 1) for part in (p.strip() for p in style.split(";")) if ":" in part)


def low_contrast(html: str) -> list[str]:
    """The text elements of ``html`` whose colours fall below 4.5:1 in either theme, described."""
    problems = []
    for _, _, style, text in TEXT_ELEMENT.findall(html):
        props = _properties(style)
        if "color" not in props and "background" not in props:
            continue
        for name, theme in THEMES.items():
            page = theme["page"]
            background = _rgb(props["background"], theme, page) if "background" in props else page
            r, g, b, a = theme["text"]
            default_text = tuple(round(a * c + (1 - a) * p) for c, p in zip((r, g, b), background))
            foreground = _rgb(props["color"], theme, background) if "color" in props else default_text
            ratio = contrast(foreground, background)
            if ratio < 4.5:
                problems.append(f"{name} theme: {ratio:.2f}:1 for {text.strip()[:20]!r} ({style})")
    return problems


def test_the_contrast_check_catches_light_text_on_a_light_background():
    assert low_contrast("<span style='background:#c7e9c0'>x</span>")  # dark theme's light text on light green
    assert low_contrast("<span style='color:#999'>x</span>")  # grey on white
    assert not low_contrast("<span style='background:#c7e9c0;color:#000000'>x</span>")
    assert abs(contrast((0, 0, 0), (255, 255, 255)) - 21) < 1e-9


def _toy_scorer(ids):
    return torch.linspace(-2, 2, 256).repeat(len(ids), 1)


@pytest.mark.parametrize("view", ["labels", "temperature", "filters"])
def test_html_views_are_readable_in_both_themes(view):
    if view == "labels":
        ids, roles = losses.render_chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}])
        html = losses.labels_html(ids, torch.where(torch.tensor([r == "assistant" for r in roles]), ids, -100))
    elif view == "temperature":
        html = sampling.temperature_view(_toy_scorer, [72, 105], 0.8, n_new=4)
    else:
        html = sampling.filters_view(_toy_scorer, [72, 105], top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2,
                                     n_new=4)
    assert TEXT_ELEMENT.search(html), "the check found no text element with a style: the pattern is stale"
    assert not low_contrast(html), low_contrast(html)
