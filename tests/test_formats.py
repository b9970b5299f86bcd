import pytest

from pipelines.quantize.formats import (
    PRESETS,
    FormatError,
    fp_element,
    int_element,
    parse_format,
    parse_formats,
)


@pytest.mark.parametrize("text, family, p, e, m, k, bpw", [
    ("mxint4_32", "mxint", 4, 0, 3, 32, 4.25),
    ("MXINT8_16", "mxint", 8, 0, 7, 16, 8.5),
    ("mxfp4_e2m1_32", "mxfp", 4, 2, 1, 32, 4.25),
    ("mxfp6_e3m2_128", "mxfp", 6, 3, 2, 128, 6.0625),
    ("mxfp8_e5m2_2", "mxfp", 8, 5, 2, 2, 12.0),
    ("mxfp3_e1m1_1024", "mxfp", 3, 1, 1, 1024, 3 + 8 / 1024),
    ("int4_g128", "int", 4, 0, 3, 128, 4.125),
    ("int8_chan", "int", 8, 0, 7, None, 8.0),
    ("int3_tens", "int", 3, 0, 2, None, 3.0),
])
def test_parse(text, family, p, e, m, k, bpw):
    fmt = parse_format(text)
    assert (fmt.family, fmt.precision, fmt.exp_bits, fmt.man_bits, fmt.block_size) == (family, p, e, m, k)
    assert fmt.bits_per_weight == pytest.approx(bpw)
    assert fmt.name == text.lower()


@pytest.mark.parametrize("text, fragment", [
    ("mxint4_1", "outside 2-1024"),
    ("mxint4_2048", "outside 2-1024"),
    ("mxint9_32", "P=9"),
    ("mxint1_32", "P=1"),
    ("mxfp4_e2m2_32", "did you mean 'mxfp5_e2m2_32'"),
    ("mxfp7_e6m0_32", "E=6"),
    ("mxfp4_e0m3_32", "E=0"),
    ("int4_g1", "outside 2-1024"),
    ("mxint4-32", "did you mean 'mxint4_32'"),
    ("mx_int4_32", "did you mean 'mxint4_32'"),
    ("int4_chanel", "did you mean 'int4_chan'"),
    ("banana", "Grammar: mxint{P}_{K}"),
])
def test_malformed_formats_explain_themselves(text, fragment):
    with pytest.raises(FormatError) as info:
        parse_format(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_element_ranges_match_the_ocp_spec():
    # emax and max normal from OCP MX v1.0, table of element formats
    assert (fp_element(4, 3).emax, fp_element(4, 3).max_normal) == (8, 448.0)
    assert (fp_element(5, 2).emax, fp_element(5, 2).max_normal) == (15, 57344.0)
    assert (fp_element(3, 2).emax, fp_element(3, 2).max_normal) == (4, 28.0)
    assert (fp_element(2, 3).emax, fp_element(2, 3).max_normal) == (2, 7.5)
    assert (fp_element(2, 1).emax, fp_element(2, 1).max_normal) == (2, 6.0)
    assert fp_element(2, 1).emin == 0  # fp4 subnormal 0.5
    assert (int_element(8).emax, int_element(8).max_normal) == (0, 1 + 63 / 64)


def test_paper_preset_has_36_distinct_mx_types():
    formats = parse_formats("xu-mx36")
    assert len(formats) == 36
    assert {f.precision for f in formats} == {2, 3, 4, 5, 6}
    assert {f.block_size for f in formats} == {16, 32, 64, 128}
    assert all(f.is_mx for f in formats)


def test_parse_formats_mixes_presets_and_names_and_drops_repeats():
    formats = parse_formats("mxint4_32, demo ,mxint4_32")
    assert formats[0].name == "mxint4_32"
    assert [f.name for f in formats[1:]] == [n for n in PRESETS["demo"] if n != "mxint4_32"]


def test_storage_bytes_counts_scales_and_ragged_tails():
    # 3 x 40 weight, K=32 -> 2 blocks per row
    assert parse_format("mxint4_32").storage_bytes(3, 40) == (3 * 40 * 4 + 3 * 2 * 8) / 8
    assert parse_format("int4_chan").storage_bytes(3, 40) == (3 * 40 * 4 + 3 * 16) / 8
    assert parse_format("int8_tens").storage_bytes(3, 40) == (3 * 40 * 8 + 16) / 8
    assert parse_format("int4_g32").storage_bytes(3, 40) == (3 * 40 * 4 + 3 * 2 * 16) / 8
