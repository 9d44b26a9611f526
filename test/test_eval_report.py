"""Per-layer report: markdown table contents and a PNG file."""
from icefall.eval.report import layer_table, write_layer_report


def test_layer_table_and_plot(tmp_path):
    results = {
        10: {"abx_within": 0.0612, "abx_across": 0.0833, "pnmi": 0.6213, "mapr": 0.3},
        2: {"abx_within": 0.1, "abx_across": 0.125},
        "last": {"pnmi": 0.5},
    }
    lines = layer_table(results).strip().splitlines()
    assert lines[0] == "| layer | ABX within (%) | ABX across (%) | PNMI | MAP@R (%) |"
    # Numeric layers in numeric order (2 before 10), named layers last; missing values '-'.
    assert lines[2] == "| 2 | 10.00 | 12.50 | - | - |"
    assert lines[3] == "| 10 | 6.12 | 8.33 | 0.621 | 30.00 |"
    assert lines[4] == "| last | - | - | 0.500 | - |"
    md, png = write_layer_report(results, tmp_path / "layers", title="toy")
    assert md.read_text().startswith("# toy\n\n| layer |")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
