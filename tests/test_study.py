"""The circuit studies as the demo runs them: progress, save and reuse, titled figures."""

import pytest
import torch

from interp.patching.study import STUDY_FILE, StudyResult, induction_study


@pytest.mark.hooked  # the study runs on the toy model, a HookedTransformer
def test_induction_study_saves_reloads_and_titles_its_figures(tmp_path, capsys):
    study = induction_study(n_prompts=4)
    assert "induction study" in capsys.readouterr().err  # the stage bar
    assert study.numbers["eap_ig_r"] > 0.5  # EAP-IG tracks exact edge patching on the toy model
    study.save(tmp_path / "s")
    assert (tmp_path / "s" / STUDY_FILE).exists()
    again = StudyResult.load(tmp_path / "s")
    assert again.summary() == study.summary() and again.numbers == study.numbers
    for key, res in study.results.items():
        torch.testing.assert_close(again.results[key].values, res.values)
    assert all(r.metric == "log p(repeated token)" for r in study.results.values())
    # Every saved result of the study replays from its folder, metric and model included.
    from interp.replay import replay

    for key in study.results:
        report = replay(tmp_path / "s" / key)
        assert report.ok, report.table()
    titles = [f.layout.title.text for f in again.figures()]
    assert titles and all(t.startswith("induction on the toy model") for t in titles)


def test_loading_an_incomplete_study_says_so(tmp_path):
    import pytest

    (tmp_path / "s").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete study"):
        StudyResult.load(tmp_path / "s")
