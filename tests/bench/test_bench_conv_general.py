"""benchmarks/conv_general.py: every case of the dilated/grouped/depthwise table is timed for
each of its contenders, and the table prints a row per case."""
from benchmarks import conv_general


def test_every_case_gets_its_contenders_and_a_table_row():
    result = conv_general.bench(repeats=1, use_torch=False)
    assert list(result) == [case[0] for case in conv_general.CASES]
    for (label, n, c, o, k, s, p, d, g, side), times in zip(conv_general.CASES, result.values()):
        routes = ["depthwise", "im2col"] if g == c else ["im2col"]
        assert sorted(times) == sorted(f"{r} {p}" for r in routes for p in ("fwd", "bwd"))
        assert all(t > 0 for t in times.values())
        assert not any(k.startswith("torch") for k in times)
    rows = conv_general.table(result).splitlines()[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(result)
