"""visualize.py: clinical-layout PNGs for synthetic and real records; bad records are skipped."""
from __future__ import annotations

import matplotlib.image as mpimg
import pytest

import visualize


def test_both_layouts_true_size(synth_records, tmp_path):
    record = synth_records / "A0001.hea"
    written = visualize.main(["--record", str(record), "--results-dir", str(tmp_path), "--seconds", "6"])
    assert [p.name for p in written] == ["A0001_3x4.png", "A0001_1col.png"]
    assert all(p.parent == tmp_path / synth_records.name / "ecg" for p in written)  # results/<db>/ecg/
    wide = mpimg.imread(written[0])
    # True size at 120 dpi: 6 s x 25 mm/s = 150 mm = 709 px wide (a long title may widen it), and four
    # 3 mV rows x 10 mm/mV = 120 mm = 567 px high plus one line of title.
    assert wide.shape[1] >= 0.99 * 709 and 567 <= wide.shape[0] <= 567 + 60
    tall = mpimg.imread(written[1])
    assert tall.shape[0] > wide.shape[0]  # twelve stacked rows are taller than 3x4 + rhythm strip
    ink = (wide[..., :3].mean(axis=2) < 0.3).mean()  # the traces are drawn: dark pixels, but not a filled page
    assert 0.002 < ink < 0.2


def test_bad_record_is_skipped(records_copy, tmp_path, capsys):
    (records_copy / "A0002.mat").write_bytes(b"not a mat file")
    written = visualize.main(["--record", str(records_copy / "A0002.hea"), str(records_copy / "A0003.hea"),
                              "--layout", "3x4", "--results-dir", str(tmp_path)])
    assert [p.name for p in written] == ["A0003_3x4.png"]
    assert "A0002" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="none of the records"):
        visualize.main(["--record", str(records_copy / "A0002.hea"), "--results-dir", str(tmp_path)])


@pytest.mark.real_data
def test_real_record(real_dir, tmp_path):
    record = sorted(real_dir.glob("*.hea"))[0]
    written = visualize.main(["--record", str(record), "--layout", "1col", "--results-dir", str(tmp_path)])
    assert written[0].stat().st_size > 10_000
