"""The verdicts of notebook 06 (token prediction), asserted over the 24 prose prompts the notebook evaluates.

The cells that decode many prompts (``sampling.decoding_evaluation``, ``repetition_penalty_evaluation``,
``filter_evaluation``) carry ``nbval-ignore-output``: a sampled byte, or a greedy near-tie, can change with the CPU's
arithmetic order. These tests re-run them and assert each verdict the notebook's fact checks draw, with the margin
stated at each assert (a paired mean against its standard error over prompts, or against a fixed gap). The stored
values quoted in the docstrings are the notebook's. The words judge scores a text with no complete word 0
(``sampling.words_score``). Verdicts that depend on the sampling seed are asserted over several seeds; those drawn
from the stored runs of seeds 0 to 4 (``data_files/ch06_seed_pooled.json``) are asserted on the stored file, and a
``rerun`` test recomputes it.
"""
import math
import re
import statistics

import pytest
import torch

from course_utils import charlm, sampling


@pytest.fixture(scope="module")
def model():
    return charlm.load()


@pytest.fixture(scope="module")
def windows():
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    return sampling.evaluation_windows(held_out, n=24, length=24, continuation=40, min_letters=12)


@pytest.fixture(scope="module")
def evaluation(model, windows):
    torch.manual_seed(0)
    prompts, references = windows
    return sampling.decoding_evaluation(model, prompts, n_new=40, beam_width=4, samples=8,
                                        temperatures=(0.1, 0.7, 1.0, 1.2), references=references)


def _diff(evaluation, a, b, metric):
    per = evaluation["per_prompt"]
    return sampling.paired_difference(per[a][metric], per[b][metric])


def test_chapter6_evaluation_uses_24_prose_prompts_whose_true_continuation_is_not_a_loop(evaluation, windows):
    """Stored: held-out text's own continuation, distinct 4-grams 0.95 ± 0.10, words in corpus 1.00."""
    prompts, references = windows
    assert evaluation["prompts"] >= 20
    assert all(len(v) == evaluation["prompts"] for m in evaluation["per_prompt"].values() for v in m.values())
    assert all(sampling._letters(p) >= 12 and 124 not in p + r for p, r in zip(prompts, references))
    assert sampling.mean_sd(evaluation["reference"]["distinct4"])[0] > 0.9  # the right answer scores as no loop
    # The words judge's set is the whole corpus, held-out part included, so the reference scores 1 by construction;
    # against the training part's words alone it scores 0.977 as a mean over prompts (pooled 102 of 105 words).
    train, _ = charlm.split(charlm.encode(charlm.training_text()))
    train_words = set(re.findall(r"[a-z]{2,}", bytes(train.tolist()).decode("latin-1").lower()))
    words = [sampling.complete_words(r) for r in references]
    score = statistics.mean(sum(w.lower() in train_words for w in ws) / len(ws) for ws in words)
    assert 0.95 < score < 1.0 and all(ws for ws in words), score
    known = sum(w.lower() in train_words for ws in words for w in ws)
    assert (known, sum(map(len, words))) == (102, 105)  # pooled 0.971; the mean over prompts is 0.977


def test_chapter6_beam_beats_greedy_on_likelihood_on_average_not_always(evaluation):
    """Stored: +0.11 ± 0.08 per byte (standard error 0.02), beam lower on 1 of 24 prompts."""
    d = _diff(evaluation, "beam 4", "greedy", "loglik")
    assert d["mean"] > 3 * d["se"], d  # stored: 0.107 against 3 x 0.016
    assert 1 <= d["reversed"] <= 6, d  # "not on every prompt": stored 1 of 24


def test_chapter6_greedy_repeats_more_than_sampling_on_average_beam_not_distinguishable_over_40_bytes(evaluation):
    """Distinct 4-grams within 40 bytes: sample(T=1) - greedy +0.15 ± 0.28 (se 0.06, 9 of 24 the other way);
    sample - beam +0.09 ± 0.25 (se 0.05, 15 of 24 the other way); beam - greedy +0.06 ± 0.32 (se 0.07)."""
    d = _diff(evaluation, "sample T=1", "greedy", "distinct4")
    assert d["mean"] > 2 * d["se"] and d["reversed"] >= 5, d  # stored 0.149 against 2 x 0.057; 9 reversed
    d = _diff(evaluation, "sample T=1", "beam 4", "distinct4")
    assert d["mean"] < 2.5 * d["se"] and d["reversed"] >= 8, d  # stored 0.093 against 2.5 x 0.051; 15 reversed
    d = _diff(evaluation, "beam 4", "greedy", "distinct4")
    assert abs(d["mean"]) < 2 * d["se"], d  # stored 0.056 against 2 x 0.066
    greedy = evaluation["outputs"]["greedy"]
    spaces = [i for i, o in enumerate(greedy) if set(o[0]) == {32}]
    assert 1 <= len(spaces) <= 3, spaces  # greedy writes 40 spaces on prompts 8 and 19
    rest = [i for i in range(len(greedy)) if i not in spaces]
    per = evaluation["per_prompt"]
    d = sampling.paired_difference([per["sample T=1"]["distinct4"][i] for i in rest],
                                   [per["greedy"]["distinct4"][i] for i in rest])
    assert 2 * d["se"] < d["mean"] < 0.7 * _diff(evaluation, "sample T=1", "greedy", "distinct4")["mean"], d
    # without them the gap about halves and stays detectable: +0.076 (se 0.029) against +0.149


@pytest.mark.slow
def test_chapter6_over_72_bytes_beam_search_repeats_more_than_sampling(model, windows):
    """Over 72 bytes (the longest continuation the context holds): distinct 4-grams greedy 0.59, beam 0.74, samples at
    T = 1 0.96; sample - beam +0.21 ± 0.26 (se 0.053, 4.0 se; the other way on 4 of 24) at seed 0, and at seeds 1
    and 2 as well; beam - greedy +0.15 ± 0.35 (se 0.071, 2.1 se); the beam loops (distinct 4-grams below 0.5) on 4 of
    24 prompts."""
    prompts = windows[0]
    long = sampling.decoding_evaluation(model, prompts, n_new=72, beam_width=4, samples=8, temperatures=(1.0,), seed=0)
    per = long["per_prompt"]
    loops = [i for i, v in enumerate(per["beam 4"]["distinct4"]) if v < sampling.LOOP]
    layout = [i for i in loops if sampling._letters(long["texts"]["beam 4"][i]) < 0.3 * 72]
    assert len(layout) == 3 and len(loops) - len(layout) == 1, (loops, layout)  # "3 of them ... and 1 ... phrase"
    for seed in (0, 1, 2):
        samples = per["sample T=1"]["distinct4"] if seed == 0 else [
            sum(map(sampling.distinct_ngram_fraction, o)) / len(o)
            for o in sampling.decode_batch(model, prompts, 72, temperature=1.0, samples=8, seed=seed)]
        d = sampling.paired_difference(samples, per["beam 4"]["distinct4"])
        assert d["mean"] > 0.1 and d["mean"] > 3 * d["se"] and d["reversed"] <= 6, (seed, d)  # stored 4.0 se at seed 0
        # without the prompts where the beam collapses into spaces or a table rule (measured 4.0, 4.3, 3.8 se)
        keep = [i for i in range(len(prompts)) if i not in layout]
        d = sampling.paired_difference([samples[i] for i in keep], [per["beam 4"]["distinct4"][i] for i in keep])
        assert d["mean"] > 0.1 and d["mean"] > 3 * d["se"], (seed, d)
    d = sampling.paired_difference(per["beam 4"]["distinct4"], per["greedy"]["distinct4"])
    assert 1.5 * d["se"] < d["mean"] < 3 * d["se"], d  # "less than greedy, by 2 standard errors": stored 2.1
    loops = sum(v < sampling.LOOP for v in per["beam 4"]["distinct4"])
    assert 2 <= loops <= 6, loops


def test_chapter6_beams_are_near_duplicates_across_outputs(evaluation):
    """Diversity across 4 outputs for one prompt: samples - beams +0.70 ± 0.11 (se 0.02, none the other way)."""
    d = _diff(evaluation, "sample T=1", "beam 4", "diversity")
    assert d["mean"] > 0.4 and d["mean"] > 5 * d["se"], d
    assert all(v == 0 for v in evaluation["per_prompt"]["greedy"]["diversity"])


def test_chapter6_high_temperature_loses_words_diversity_is_saturated(evaluation):
    """T = 0.7 - T = 1.2, words in corpus +0.22 ± 0.08 (none the other way); diversity 0.97 at T = 0.7, 0.99 at
    1.2 (+0.02 ± 0.02): the measure is saturated, so it cannot show what T = 0.7 buys."""
    d = _diff(evaluation, "sample T=0.7", "sample T=1.2", "words")
    assert d["mean"] > 0.15 and d["mean"] > 5 * d["se"] and d["reversed"] <= 2, d
    div = _diff(evaluation, "sample T=1.2", "sample T=0.7", "diversity")
    assert div["mean"] < 0.05, div
    assert sampling.mean_sd(evaluation["per_prompt"]["sample T=0.7"]["diversity"])[0] > 0.93  # saturated
    means = [sampling.mean_sd(evaluation["per_prompt"][f"sample T={t}"]["words"])[0] for t in ("0.7", "1", "1.2")]
    assert means == sorted(means, reverse=True), means


def test_chapter6_diversity_on_2_grams_rises_from_t1_to_t12_on_every_seed(model, windows, evaluation):
    """On 2-grams, further from the ceiling, diversity across 4 outputs rises from T = 1 to T = 1.2 by about 3
    standard errors on each of seeds 0, 1, 2 (measured +0.019/0.006, +0.025/0.007, +0.019/0.006) and from T = 0.7
    to T = 1 (+0.034, +0.028, +0.042; 3.5 to 5 se): "T > 1 is more diverse than T = 1" is confirmed, the 4-gram
    measure was only too coarse to see it."""
    prompts = windows[0]
    for seed in (0, 1, 2):
        outs = {t: evaluation["outputs"][f"sample T={t:g}"] if seed == 0 else
                sampling.decode_batch(model, prompts, 40, temperature=t, samples=8, seed=seed) for t in (0.7, 1.0, 1.2)}
        div2 = {t: [sampling.pairwise_ngram_diversity(o[:4], n=2) for o in outs[t]] for t in outs}
        hot = sampling.paired_difference(div2[1.2], div2[1.0])
        assert hot["mean"] > 2.5 * hot["se"] and hot["reversed"] <= 8, (seed, hot)
        warm = sampling.paired_difference(div2[1.0], div2[0.7])
        assert warm["mean"] > 2.5 * warm["se"], (seed, warm)


def test_chapter6_t01_scores_as_greedy_with_little_variation_but_the_text_varies(evaluation):
    """Stored: 47 of 192 samples at T = 0.1 equal the greedy text; likelihood -0.55 both, distinct 4-grams 0.84 against
    0.82, words 0.92 both; sd of words across one prompt's samples, median 0.00; diversity 0.60."""
    same = sum(sampling.same_as_greedy(evaluation, "sample T=0.1"))
    assert 0.1 * 192 <= same <= 0.5 * 192, same
    per = evaluation["per_prompt"]
    for metric, margin in (("loglik", 0.03), ("distinct4", 0.05), ("words", 0.02)):  # the quality is greedy's
        gap = abs(sampling.mean_sd(per["sample T=0.1"][metric])[0] - sampling.mean_sd(per["greedy"][metric])[0])
        assert gap < margin, (metric, gap)  # stored gaps 0.005, 0.02, 0.00
    assert statistics.median(sampling.within_prompt_sd(evaluation, "sample T=0.1")) < 0.02  # stored 0.00
    assert sampling.mean_sd(per["sample T=0.1"]["diversity"])[0] > 0.3  # ... but the texts differ (stored 0.60)


@pytest.mark.slow
def test_chapter6_t01_greedy_text_reproduced_as_the_chain_rule_predicts(model, windows, evaluation):
    """6.a's reveal: 47 of 192 samples at T = 0.1 are the greedy text; the chain rule's exact expectation is 51.1,
    the leave rate along greedy's path 3.5% (the held-out text's 2.9%); 16 of the 47 come from the 2 prompts whose
    greedy text is only spaces, and on the other 22 prompts 31 of 176 (18%)."""
    exact = sampling.greedy_reproduction(model, windows[0], evaluation, temperature=0.1)
    assert exact["samples"] == 192
    assert 0.75 * exact["expected"] < exact["measured"] < 1.25 * exact["expected"], exact
    assert 0.03 < exact["leave"] < 0.04, exact
    assert len(exact["spaces"]) == 2 and exact["from_spaces"] >= 14, exact
    assert 0.12 < exact["other_same"] / exact["other_samples"] < 0.25, exact  # "4 in 5 differ" on the prose prompts


def test_chapter6_sample_quality_varies_as_independent_word_errors_predict(model, windows, evaluation):
    """Median over prompts of the sd of words-in-corpus across one prompt's 8 samples, against what independent errors
    per word at the prompt's own rate give (sampling.independent_errors_sd): seed 0 0.11 / 0.09 (T = 0.7), 0.17 / 0.15
    (T = 1), 0.20 / 0.20 (T = 1.2); seeds 1 and 2 agree within 0.03 too. The measured medians rise with T."""
    for seed in (0, 1, 2):
        if seed == 0:
            runs = evaluation
        else:
            runs = {"outputs": {f"sample T={t:g}": sampling.decode_batch(model, windows[0], 40, temperature=t,
                                                                         samples=8, seed=seed)
                                for t in (0.7, 1.0, 1.2)}}
        medians = []
        for t in ("0.7", "1", "1.2"):
            measured = statistics.median(sampling.within_prompt_sd(runs, f"sample T={t}"))
            independent = statistics.median(sampling.independent_errors_sd(runs, f"sample T={t}"))
            assert abs(measured - independent) < 0.03, (seed, t, measured, independent)  # stored at most 0.016
            medians.append(measured)
        assert medians[1] > 0.08 and medians == sorted(medians), (seed, medians)


def _best_of_verdicts(result):
    """Best-of-N at T = 1 over the seeds of a seed_pooled_evaluation result (stored: seeds 0-4, 8 samples each)."""
    best = {int(n): {k: sampling.pool_seeds(v) for k, v in m.items()} for n, m in result["best_of"].items()}
    ll = [sampling.mean_sd(best[n]["loglik"])[0] for n in (1, 2, 4, 8)]
    assert ll == sorted(ll), ll  # the scorer's own score rises with N (by construction)
    words4 = sampling.paired_difference(best[4]["words"], best[1]["words"])
    assert words4["mean"] > 4 * words4["se"], words4  # stored +0.065 against 4 x 0.009
    words8 = sampling.paired_difference(best[8]["words"], best[1]["words"])
    assert words8["mean"] > 3 * words8["se"], words8  # stored +0.072 against 3 x 0.016
    per_seed = [sampling.paired_difference(a, b) for a, b in zip(result["best_of"]["8"]["words"],
                                                                 result["best_of"]["1"]["words"])]
    alone = sum(d["mean"] > 2 * d["se"] for d in per_seed)
    assert 1 <= alone < len(per_seed), per_seed  # one seed alone may miss it: stored 3 of 5 detect it
    drift = sampling.paired_difference(best[8]["distinct4"], best[1]["distinct4"])
    assert -0.1 < drift["mean"] < -2 * drift["se"], drift  # stored -0.036, se 0.010: small, detectable
    picks = {n: len(result["seeds"]) * len(best[n]["loops"]) * 8 // n for n in (1, 8)}
    loops = {n: sum(map(sum, result["best_of"][str(n)]["loops"])) / picks[n] for n in (1, 8)}
    assert loops[1] < 0.02 and loops[8] > 2 * loops[1], loops  # stored 8 of 960 against 5 of 120


def test_chapter6_best_of_n_second_judge_and_a_small_drift_to_repetition():
    """The stored runs of seeds 0-4 (40 samples per prompt at T = 1): words in corpus best of 4 - best of 1 +0.07 ±
    0.04 (se 0.01), best of 8 - best of 1 +0.07 ± 0.08 (se 0.02; seed by seed +0.01 to +0.12, detectable alone on 3
    of 5); distinct 4-grams best of 8 - best of 1 -0.04 ± 0.05 (se 0.01); loops 8 of 960 single samples, 5 of 120
    best-of-8 picks. tests below re-run the stored runs (rerun)."""
    _best_of_verdicts(sampling.load_seed_pooled())


def test_chapter6_best_of_n_at_seed_0_the_notebook_table(evaluation):
    """The evaluation's own best-of-N (seed 0), as the notebook prints it before the pooled rows: words best of 4 - best
    of 1 +0.07 ± 0.11 (se 0.02); best of 8 - best of 1 +0.03 ± 0.22 (se 0.04), not detectable at this seed alone."""
    best = evaluation["best_of"]
    words4 = sampling.paired_difference(best[4]["words"], best[1]["words"])
    assert words4["mean"] > 2 * words4["se"], words4  # stored 0.074 against 2 x 0.023
    words8 = sampling.paired_difference(best[8]["words"], best[1]["words"])
    assert words8["mean"] < 2 * words8["se"], words8  # stored 0.035 against 2 x 0.044


def test_chapter6_beam_costs_more_than_greedy(evaluation):
    """Beam search feeds B = 4 rows per prompt per step against greedy's 1; timed in the same process."""
    assert evaluation["seconds"]["beam 4"] > evaluation["seconds"]["greedy"], evaluation["seconds"]


def test_chapter6_repetition_penalty_over_prompts(model, windows):
    """Greedy + penalty 1.3 - greedy, distinct 4-grams. Hugging Face's rule (prompt penalised too): 40 bytes -0.02 ±
    0.25 (se 0.05); 72 bytes +0.17 ± 0.26 (se 0.05), lower by more than 0.05 on 3 prompts; 2 continuations (prompts 4
    and 14) lose every word, so words in corpus fall by 0.08 (se 0.06). The note's rule (generated bytes only): 40 bytes
    -0.05 ± 0.26 (se 0.05), 72 bytes +0.11 ± 0.32 (se 0.06, 1.7 se): not detectable; no continuation loses its words."""
    result = sampling.repetition_penalty_evaluation(model, windows[0], lengths=(40, 72), penalty=1.3)

    def diff(n_new, name, metric):
        return sampling.paired_difference(result[n_new][name][metric], result[n_new]["greedy"][metric])

    def no_word(n_new, name):
        return {i for i, ids in enumerate(result[n_new][name]["texts"]) if not sampling.complete_words(ids)}

    hf, note = "penalty 1.3", "penalty 1.3, generated only"
    short = diff(40, hf, "distinct4")
    assert abs(short["mean"]) < 2 * short["se"], short  # not detectable at 40 bytes
    long = diff(72, hf, "distinct4")
    assert long["mean"] > 2 * long["se"], long  # stored 0.17 against 2 x 0.05
    worse = sum(a < b - 0.05 for a, b in zip(result[72][hf]["distinct4"], result[72]["greedy"]["distinct4"]))
    assert worse >= 2, worse  # "can make it worse on some prompts"
    for n_new in (40, 72):
        lost = no_word(n_new, hf) - no_word(n_new, "greedy")
        assert 1 <= len(lost) <= 3 and diff(n_new, hf, "words")["mean"] < -0.03, (n_new, lost)  # stored {4, 14}, -0.08
        assert no_word(n_new, note) <= no_word(n_new, "greedy"), n_new  # the note's rule makes no run of spaces
        d = diff(n_new, note, "distinct4")
        assert abs(d["mean"]) < 2 * d["se"], (n_new, d)  # stored -0.05 / 0.05 and +0.11 / 0.065


def _penalty_sweep_verdicts(sweep):
    """The verdict per θ of the fact check "prevents repetition" (stored values in the comments)."""
    runs = {int(n): r for n, r in sweep["runs"].items()}

    def diff(n_new, name, metric):
        return sampling.paired_difference(runs[n_new][name][metric], runs[n_new]["greedy"][metric])

    hf, note = "penalty {:g}", "penalty {:g}, generated only"
    # θ = 1.3: Hugging Face's rule detectable only over 72 bytes (+0.17, se 0.053); the note's at neither length.
    assert diff(72, hf.format(1.3), "distinct4")["mean"] > 2 * diff(72, hf.format(1.3), "distinct4")["se"]
    for n_new in (40, 72):
        d = diff(n_new, note.format(1.3), "distinct4")
        assert abs(d["mean"]) < 2 * d["se"], (n_new, d)  # -0.05 / 0.053, +0.11 / 0.065
    assert len(set(runs[72][hf.format(1.3)]["no_word"]) - set(runs[72]["greedy"]["no_word"])) == 2  # {4, 14}
    for theta in (1.5, 2.0):
        for name in (hf.format(theta), note.format(theta)):
            long = diff(72, name, "distinct4")
            assert long["mean"] > 3 * long["se"], (theta, name, long)  # 3.5 to 7.1 se
            assert set(runs[72][name]["no_word"]) <= set(runs[72]["greedy"]["no_word"]), (theta, name)
            words = diff(72, name, "words")
            assert abs(words["mean"]) < 2 * words["se"], (theta, name, words)  # within 1.2 se
        short_hf, short_note = diff(40, hf.format(theta), "distinct4"), diff(40, note.format(theta), "distinct4")
        assert 1.5 * short_hf["se"] < short_hf["mean"] < 3 * short_hf["se"], (theta, short_hf)  # 2.1 and 2.2 se
        assert abs(short_note["mean"]) < 2 * short_note["se"], (theta, short_note)  # 1.0 and 1.4 se
    lost = diff(40, note.format(2.0), "words")
    assert lost["mean"] < -2 * lost["se"], lost  # -0.17, se 0.067: the note's rule at θ = 2 costs words over 40 bytes


def test_chapter6_repetition_penalty_verdict_per_strength():
    """The stored sweep (data_files/ch06_penalty_sweep.json, θ = 1.3, 1.5, 2.0, 40 and 72 bytes) the fact check and
    the summary quote: at θ = 1.3 the note's rule is not detectably better than greedy; at 1.5 and 2.0 both rules
    reduce repetition over 72 bytes with no run of spaces of their own and no detectable loss of words."""
    stored = sampling.load_penalty_sweep()
    assert stored["penalties"] == [1.3, 1.5, 2.0] and stored["lengths"] == [40, 72]
    _penalty_sweep_verdicts(stored)


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter6_stored_penalty_sweep_recomputed(model, windows):
    """Recomputes data_files/ch06_penalty_sweep.json (about 5 s of greedy decoding): per length, θ and rule the mean
    over prompts of each metric within 0.02 of the stored one (a greedy near-tie may flip with the CPU's arithmetic
    order), then the verdicts on the fresh runs."""
    fresh, stored = sampling.repetition_penalty_sweep(model, windows[0]), sampling.load_penalty_sweep()
    assert fresh["runs"].keys() == stored["runs"].keys()
    for n_new, runs in stored["runs"].items():
        for name, metrics in runs.items():
            for metric in ("distinct4", "words"):
                assert abs(statistics.mean(fresh["runs"][n_new][name][metric]) - statistics.mean(metrics[metric])) \
                    < 0.02, (n_new, name, metric)
    _penalty_sweep_verdicts(fresh)


@pytest.fixture(scope="module")
def probs(model):
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    return sampling.next_token_distributions(model, held_out, windows=4)


def test_chapter6_min_p_beats_top_p_09_at_high_temperature_by_cutting_harder(model, windows, probs):
    """Over the 384 held-out positions at T = 1.5, min-p 0.1 keeps 5.5 tokens on average, top-p 0.9 11.4, and top-p
    0.75 (the closest in strength there) 5.6; along min-p's own samples (seed 0) min-p keeps 5.6, top-p 0.75 5.0 and
    0.8 6.1, the two grid values that bracket it. Words in corpus, min-p - top-p 0.9: T = 1.0 -0.00 (se 0.02);
    T = 1.5 +0.13 (se 0.02, 1 of 24 the other way). Against top-p 0.75 at T = 1.5, over sampling seeds 0, 1, 2,
    min-p is never ahead by a standard error (stored -0.029, -0.038, -0.011): the gain is the strength of the cut, not
    min-p's rule. Diversity within 0.03 throughout (saturated). The pooled verdict of 6.b: the stored-runs tests
    below."""
    assert sampling.matched_top_p(probs, 1.5, min_p=0.1) == 0.75
    along = sampling.sampled_next_token_distributions(model, windows[0], 1.5, min_p=0.1, seed=0)
    assert sampling.bracketing_top_p(along, 1.5, min_p=0.1) == (0.75, 0.8)
    assert sampling.kept_sizes(along, 1.5, top_p=0.75).double().mean() < 0.95 * sampling.kept_sizes(
        along, 1.5, min_p=0.1).double().mean()  # top-p 0.75 cuts harder along the decoded text: 5.0 against 5.6
    size = {name: float(sampling.kept_sizes(probs, 1.5, **kw).double().mean())
            for name, kw in (("min", {"min_p": 0.1}), ("0.9", {"top_p": 0.9}), ("0.75", {"top_p": 0.75}))}
    assert size["min"] < 0.6 * size["0.9"] and abs(size["min"] - size["0.75"]) < 0.5, size
    at1 = sampling.filter_evaluation(model, windows[0], temperatures=(1.0,), top_p=0.9, min_p=0.1)[1.0]
    d = sampling.paired_difference(at1["min-p 0.1"]["words"], at1["top-p 0.9"]["words"])
    assert abs(d["mean"]) < 2.5 * d["se"] and abs(d["mean"]) < 0.04, d
    for seed in (0, 1, 2):
        hot = sampling.filter_evaluation(model, windows[0], temperatures=(1.5,), top_p=(0.9, 0.75), min_p=0.1,
                                         seed=seed)[1.5]
        weaker = sampling.paired_difference(hot["min-p 0.1"]["words"], hot["top-p 0.9"]["words"])
        assert weaker["mean"] > 0.05 and weaker["mean"] > 4 * weaker["se"] and weaker["reversed"] <= 4, (seed, weaker)
        matched = sampling.paired_difference(hot["min-p 0.1"]["words"], hot["top-p 0.75"]["words"])
        assert matched["mean"] < matched["se"], (seed, matched)
        for name in ("top-p 0.9", "top-p 0.75"):
            div = sampling.paired_difference(hot["min-p 0.1"]["diversity"], hot[name]["diversity"])
            assert abs(div["mean"]) < 0.03, (seed, name, div)


def _filter_verdicts(result):
    """Prediction 6.b's graded answer, pooled over the seeds of a seed_pooled_evaluation result (stored: seeds 0-4):
    against the two top-p values that bracket min-p 0.1's strength along its own samples, min-p 0.1 - top-p 0.75
    (cuts harder) -0.033 (se 0.0085, 3.9 se) and - top-p 0.8 (cuts less hard) +0.010 (se 0.007, 10 of 24 the other
    way): top-p 0.75 alone wins (about 4 se), top-p 0.8 does not, so the graded answer is (c) "neither side wins both
    comparisons"; - top-p 0.9 +0.129 (se 0.008,
    none the other way). Seed by seed the difference with 0.75 is -0.011 to -0.054, detectable alone on 2 of 5 seeds."""
    words = {name: sampling.pool_seeds(v) for name, v in result["filters"].items()}
    harder = sampling.paired_difference(words["min-p 0.1"], words["top-p 0.75"])
    softer = sampling.paired_difference(words["min-p 0.1"], words["top-p 0.8"])
    assert harder["mean"] < -2 * harder["se"] and harder["mean"] > -0.1, harder  # the harder cut keeps more words
    assert -5.5 * harder["se"] < harder["mean"] < -3 * harder["se"], harder  # "about 4 standard errors": stored 3.9
    assert abs(softer["mean"]) < 2 * softer["se"] and softer["mean"] > harder["mean"] + 0.02, softer
    assert sampling.bracketed_verdict(harder, softer) == "neither side wins both comparisons"  # graded answer (c)
    weaker = sampling.paired_difference(words["min-p 0.1"], words["top-p 0.9"])
    assert weaker["mean"] > 0.05 and weaker["mean"] > 5 * weaker["se"] and weaker["reversed"] <= 2, weaker
    per_seed = [sampling.paired_difference(a, b) for a, b in zip(result["filters"]["min-p 0.1"],
                                                                 result["filters"]["top-p 0.75"])]
    assert all(d["mean"] < d["se"] for d in per_seed), per_seed  # min-p ahead by a standard error on no seed
    assert any(abs(d["mean"]) < 2 * d["se"] for d in per_seed), per_seed  # one seed alone can answer (c)


def test_chapter6_prediction_6b_is_graded_on_seeds_pooled():
    """The stored runs the reveal of 6.b grades (sampling.seed_pooled_evaluation, seeds 0-4, 8 samples each)."""
    stored = sampling.load_seed_pooled()
    assert stored["seeds"] == [0, 1, 2, 3, 4]
    _filter_verdicts(stored)


@pytest.mark.slow
@pytest.mark.rerun
def test_chapter6_stored_seed_runs_recomputed(model, windows):
    """Recomputes data_files/ch06_seed_pooled.json (about a minute) and checks it: per filter and per best-of-N, the
    mean over prompts and seeds of every metric within 0.02 of the stored one (a sampled byte may change with the CPU's
    arithmetic order, so not exactly), then asserts the verdicts on the fresh runs."""
    fresh, stored = sampling.seed_pooled_evaluation(model, windows[0]), sampling.load_seed_pooled()
    assert fresh["seeds"] == stored["seeds"]

    def mean(per_seed):
        return sum(map(sum, per_seed)) / sum(map(len, per_seed))

    for name, runs in stored["filters"].items():
        assert abs(mean(fresh["filters"][name]) - mean(runs)) < 0.02, name
    for n, metrics in stored["best_of"].items():
        for metric in ("loglik", "words", "distinct4"):
            assert abs(mean(fresh["best_of"][n][metric]) - mean(metrics[metric])) < 0.02, (n, metric)
    _filter_verdicts(fresh)
    _best_of_verdicts(fresh)


def test_chapter6_t01_is_almost_greedy_per_token(probs):
    """Per token, over the 384 held-out positions: a T = 0.1 sample leaves greedy's byte with probability 2.9% on
    average (per window 2.2% to 3.8%), against 28.9% at T = 1 (chapter 8 states the same per-token figures)."""
    leave = {t: 1 - sampling.softmax_with_temperature(probs.log(), t).max(dim=1).values for t in (0.1, 1.0)}
    assert 0.01 < float(leave[0.1].mean()) < 0.05 and float(leave[1.0].mean()) > 5 * float(leave[0.1].mean())
    assert all(float(leave[0.1][96 * w: 96 * w + 96].mean()) < 0.06 for w in range(4))


def test_chapter6_nucleus_sizes_and_k50(model):
    """Over 384 positions: 90% nucleus median 2, 99th percentile 34, above 50 at 1 position (101 bytes); the top 50
    bytes hold < 0.9 of the mass at 1 position; kept size vs entropy, Spearman (ties: mean rank): top-p 0.96,
    min-p 0.87; Pearson 0.78 and 0.83, or 0.89 and 0.83 without the 101-byte position; at matched strengths, below."""
    _, held_out = charlm.split(charlm.encode(charlm.training_text()))
    probs = sampling.next_token_distributions(model, held_out, windows=4)
    nucleus = torch.isfinite(sampling.top_p_filter(probs.log(), 0.9)).sum(1)
    assert nucleus.median() <= 3 and (nucleus > 50).sum() <= 2, nucleus.sort().values[-5:]
    top50 = probs.sort(1, descending=True).values[:, :50].sum(1)
    assert (top50 < 0.9).sum() <= 2
    ent = sampling.entropy(probs)
    size_min = torch.isfinite(sampling.min_p_filter(probs.log(), 0.1)).sum(1).float()
    assert sampling.spearman(nucleus.float(), ent) > 0.85 and sampling.spearman(size_min, ent) > 0.75
    # Which follows the entropy more closely: top-p by Spearman in every window of 96 (stored 0.91-0.97 against
    # 0.79-0.90); by Pearson min-p leads (0.83 against 0.78) only through the one 101-byte nucleus: without it top-p
    # 0.89, min-p 0.83.
    for w in range(4):
        part = slice(96 * w, 96 * w + 96)
        assert sampling.spearman(nucleus[part].float(), ent[part]) > sampling.spearman(size_min[part], ent[part]), w
    assert sampling.pearson(nucleus.float(), ent) < sampling.pearson(size_min, ent)
    rest = nucleus != nucleus.max()
    assert (~rest).sum() == 1
    assert sampling.pearson(nucleus[rest].float(), ent[rest]) > sampling.pearson(size_min[rest], ent[rest]) + 0.03
    # At matched strength (3.3 bytes kept on average): top-p 0.8 ahead of min-p 0.1 on both measures (Spearman 0.92
    # against 0.87, every window; Pearson 0.88 against 0.83). At about 7 bytes (top-p 0.95 7.2, min-p 0.02 6.6): even
    # by rank (0.96 each), and on Pearson once the one 150-byte nucleus is left out (0.880 against 0.888); with it
    # min-p leads on Pearson (0.88 against 0.75) through that position alone.
    size_08 = torch.isfinite(sampling.top_p_filter(probs.log(), 0.8)).sum(1).float()
    assert abs(size_08.mean() - size_min.mean()) < 0.2
    assert sampling.pearson(size_08, ent) > sampling.pearson(size_min, ent) + 0.03
    for w in range(4):
        part = slice(96 * w, 96 * w + 96)
        assert sampling.spearman(size_08[part], ent[part]) > sampling.spearman(size_min[part], ent[part]), w
    size_095 = torch.isfinite(sampling.top_p_filter(probs.log(), 0.95)).sum(1).float()
    size_002 = torch.isfinite(sampling.min_p_filter(probs.log(), 0.02)).sum(1).float()
    assert abs(size_095.mean() - size_002.mean()) < 1.0
    assert sampling.pearson(size_002, ent) > sampling.pearson(size_095, ent) + 0.1
    assert abs(sampling.spearman(size_002, ent) - sampling.spearman(size_095, ent)) < 0.02
    rest = size_095 != size_095.max()
    assert (~rest).sum() == 1 and size_095.max() > 100
    assert abs(sampling.pearson(size_002[rest], ent[rest]) - sampling.pearson(size_095[rest], ent[rest])) < 0.03


def test_chapter6_multiplicative_penalty_depends_on_the_logit_offset_additive_does_not():
    """Stored: p(token 1) 0.1089 in all three; sign-aware 1.5 gives 0.0805, 0.0690, 0.0163; presence ln 1.5: 0.0754."""
    z, seen = torch.tensor([3.0, 1.0, 0.5, -1.0, -2.0]), torch.tensor([1])
    mult, add = [], []
    for shift in (0.0, -2.0, 5.0):
        zs = z + shift
        mult.append(float(torch.softmax(sampling.apply_repetition_penalty(zs, seen, 1.5), 0)[1]))
        add.append(float(torch.softmax(sampling.apply_presence_penalty(zs, seen, presence=math.log(1.5)), 0)[1]))
    assert [round(p, 4) for p in mult] == [0.0805, 0.0690, 0.0163]
    assert max(add) - min(add) < 1e-6 and round(add[0], 4) == 0.0754


# --------------------------------------------------------------------------- 6.9: the key/value cache (exercise 6.7)

def _kv_models(model):
    """The byte model and the small rotary models of exercise 6.7's cases (one with YaRN, so rope_factor != 1)."""
    from solutions.ch06_token_prediction import _kv_model

    return {"byte model": model, "1 head": _kv_model(0, n_head=1, d_model=8),
            "4 heads": _kv_model(1, n_head=4, d_model=16), "yarn": _kv_model(2, n_head=2, d_model=16,
                                                                            scaling=("yarn", 2.0))}


@pytest.mark.parametrize("name", ["byte model", "1 head", "4 heads", "yarn"])
def test_chapter6_cached_forward_matches_the_models_own_full_forward(model, name):
    """Exercise 6.7's answer against an independent reference, the model's forward on the whole sequence: reading a
    text in chunks through the cache (a prefill, single tokens, a chunk of several, up to the full context) gives the
    full forward's logits at every position within 1e-4, and the cache holds what one prefill of the text holds.
    One position more than the context raises ValueError."""
    m = _kv_models(model)[name]
    block = m.config.block_size
    ids = torch.randint(0, m.config.vocab_size, (3, block), generator=torch.Generator().manual_seed(6))
    cuts = [0, 5, 6, 7, 11, block - 1, block]  # chunks of 5, 1, 1, 4, ..., 1
    cache, pieces = [], []
    for a, b in zip(cuts, cuts[1:]):
        logits, cache = sampling.cached_forward(m, ids[:, a:b], cache)
        pieces.append(logits)
    with torch.no_grad():
        full = m(ids)[0]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-4)
    _, whole = sampling.cached_forward(m, ids, [])
    for (k, v), (k_all, v_all) in zip(cache, whole):
        torch.testing.assert_close(k, k_all, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, v_all, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        sampling.cached_forward(m, ids[:, :1], cache)


def _decode(model, prompts, n_new, temperature, seed, cache):
    """A step-by-step decoder: with the cache it feeds only the new byte; without, the full forward reads the text."""
    gen = torch.Generator().manual_seed(seed)
    text = new = torch.tensor(prompts)
    kv = []
    with torch.no_grad():
        for _ in range(n_new):
            if cache:
                logits, kv = sampling.cached_forward(model, new, kv)
            else:
                logits = model(text)[0]
            z = logits[:, -1]
            new = (z.argmax(dim=-1, keepdim=True) if temperature == 0 else
                   torch.multinomial(torch.softmax(z / temperature, dim=-1), 1, generator=gen))
            text = torch.cat([text, new], dim=1)
    return text[:, len(prompts[0]):]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_chapter6_decoding_with_the_cache_gives_the_bytes_of_decoding_without_it(model, windows, temperature):
    """24 prompts, 72 new bytes (up to the full 96-byte context), greedy and sampled at T = 1 with seed 0: the cache
    and a decoder that calls the model's full forward on the growing text at every step give the same bytes on every
    prompt (the notebook shows 40 bytes, replayed from one full forward)."""
    prompts = windows[0]
    with_cache = _decode(model, prompts, 72, temperature, 0, cache=True)
    without = _decode(model, prompts, 72, temperature, 0, cache=False)
    assert torch.equal(with_cache, without), (with_cache != without).any(dim=1).nonzero()[:, 0].tolist()


def test_chapter6_a_step_without_the_cache_costs_the_texts_length_times_a_step_with_it(model):
    """Counted by torch's FlopCounterMode (attention in the math backend): the step that reads byte L costs L times
    as much without the cache as with it (stored: 25.0, 48.0, 72.0, 96.0), and with the cache the step at byte 96
    costs less than 15% more than the one at byte 25 (stored 11%)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    def counted(fn):
        with FlopCounterMode(display=False, depth=None) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            fn()
        return counter.get_total_flops()

    row = torch.randint(0, 256, (1, 96), generator=torch.Generator().manual_seed(0))
    cost = {}
    for L in (25, 48, 72, 96):
        cache = sampling.cached_forward(model, row[:, :L - 1], [])[1]
        cost[L] = (counted(lambda: sampling.cached_forward(model, row[:, L - 1:L], cache)),
                   counted(lambda: model(row[:, :L])))
        assert abs(cost[L][1] / cost[L][0] - L) < 0.5, (L, cost[L])
    assert cost[96][0] < 1.15 * cost[25][0], cost


def test_chapter6_exercise_65_cases_separate_the_two_readings_of_a_finished_beam():
    """Exercise 6.5's contract: a finished candidate holds its slot only in the step that finished it (the beam does not
    shrink for good), and len(c) counts the end token. Each misreading passes the first five cases and fails one of the
    last two, so the check tells them from the reference."""
    from solutions.ch06_token_prediction import _beam_cases, _beam_eos_not_counted, _beam_shrinks_for_good

    cases = _beam_cases()
    for wrong, caught_by in ((_beam_shrinks_for_good, -2), (_beam_eos_not_counted, -1)):
        for i, case in enumerate(cases):
            same = wrong(*case.args) == sampling.beam_search(*case.args)
            assert same == (i != len(cases) + caught_by), (wrong.__name__, case.name)
