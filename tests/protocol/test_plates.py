"""Plate normal form: confusable characters, separators, full-width input, new-energy plates, and refusals."""

from __future__ import annotations

import pytest

from protocol.plates import PlateError, is_new_energy, normalize


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("京A12345", "京A12345"),
        ("京a 123·45", "京A12345"),
        ("京A1234O", "京A12340"),  # O after the office letter is a zero
        ("京AI2345", "京A12345"),  # I is a one
        ("沪AD12345", "沪AD12345"),  # new energy, small car
        ("粤B12345F", "粤B12345F"),  # new energy, large car
        ("粤B0000学", "粤B0000学"),
        ("京Ａ１２３４５", "京A12345"),  # full-width from some cameras
        ("川A-ZX912", "川AZX912"),
    ],
)
def test_normal_form(raw: str, want: str) -> None:
    assert normalize(raw) == want


def test_new_energy_detection() -> None:
    assert is_new_energy("沪AD12345") and not is_new_energy("京A12345")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("A12345", "too short"),
        ("XA123456", "province"),
        ("京I12345", "not a valid plate"),  # I is never an office letter
        ("京A1234", "too short"),
        ("京A123456", "not a valid plate"),  # six after the letter without D/F
    ],
)
def test_refusals_say_why(raw: str, why: str) -> None:
    with pytest.raises(PlateError, match=why):
        normalize(raw)
