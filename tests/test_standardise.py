"""Standard forms: what c360 makes of the raw values sources send."""

import datetime as dt

import pandas as pd
import pytest

from c360_pipelines.core import standardise as std


def values(*items: object) -> pd.Series:
    return pd.Series(list(items), dtype="object")


def test_emails_are_trimmed_and_lower_cased_and_the_raw_form_is_not_touched() -> None:
    raw = values("  Ann.Smith@Example.COM ")
    result = std.standardise_emails(raw)
    assert result.loc[0, "email"] == "ann.smith@example.com"
    assert raw[0] == "  Ann.Smith@Example.COM "


def test_gmail_dots_and_plus_tags_fold_into_one_matching_key() -> None:
    keys = std.standardise_emails(values("a.n.n+shop@gmail.com", "ann@googlemail.com", "ann+x@fastmail.com"))["email_key"]
    assert keys.tolist() == ["ann@gmail.com", "ann@gmail.com", "ann@fastmail.com"]


def test_dots_in_non_gmail_addresses_are_significant() -> None:
    keys = std.standardise_emails(values("a.nn@yahoo.com", "ann@yahoo.com"))["email_key"]
    assert keys[0] != keys[1]


def test_invalid_emails_are_flagged_and_get_no_matching_key() -> None:
    result = std.standardise_emails(values("not an email", "ann@", "ann@localhost", None))
    assert not result["is_valid"].any()
    assert result["email_key"].isna().all()


def test_phones_in_any_format_become_the_same_e164_number() -> None:
    result = std.standardise_phones(values("(415) 555-2671", "415.555.2671", "+1 415 555 2671", "1-415-555-2671"), "US")
    assert set(result["phone_e164"]) == {"+14155552671"}
    assert result["is_valid"].all()


def test_national_numbers_use_the_source_default_region() -> None:
    assert std.standardise_phones(values("020 7946 0958"), "GB").loc[0, "phone_e164"] == "+442079460958"


def test_an_invalid_phone_keeps_a_flag_instead_of_failing() -> None:
    result = std.standardise_phones(values("12", "call me", "000-000-0000"), "US")
    assert not result["is_valid"].any()


def test_phone_extensions_are_kept_apart() -> None:
    result = std.standardise_phones(values("415-555-2671 ext. 12"), "US")
    assert result.loc[0, "phone_e164"] == "+14155552671" and result.loc[0, "extension"] == "12"


def test_names_in_one_case_are_title_cased_and_mixed_case_is_kept() -> None:
    assert std.clean_name(values(" JOHN ", "mary  ann", "McDonald")).tolist() == ["John", "Mary Ann", "McDonald"]


def test_name_matching_forms_drop_accents_and_punctuation() -> None:
    assert std.name_norm(values("José", "O'Brien-Smith")).tolist() == ["jose", "obriensmith"]


def test_full_names_split_in_either_order_with_titles_and_suffixes() -> None:
    parts = std.parse_full_names(values("Dr. Mary Ann O'Neil Jr.", "Smith, John"))
    assert parts.loc[0, ["first_name", "last_name", "name_suffix"]].tolist() == ["Mary", "O'Neil", "Jr."]
    assert parts.loc[1, ["first_name", "last_name"]].tolist() == ["John", "Smith"]


def test_birth_dates_use_the_declared_format() -> None:
    result = std.parse_birth_dates(values("31/12/1970", "01/02/1980"), ["%d/%m/%Y"])
    assert result["birth_date"].tolist() == [dt.date(1970, 12, 31), dt.date(1980, 2, 1)]


def test_impossible_and_future_birth_dates_are_flagged_not_dropped() -> None:
    result = std.parse_birth_dates(values("1980-02-30", "2999-01-01", "1980-02-28", None))
    assert result["birth_date_valid"].tolist()[:3] == [False, False, True]
    assert pd.isna(result["birth_date_valid"][3])


def test_time_zones_are_converted_to_utc() -> None:
    parsed = std.parse_datetimes(values("2024-06-01T12:00:00+02:00", "2024-06-01 10:00:00"))
    assert parsed.tolist() == [pd.Timestamp("2024-06-01 10:00:00")] * 2


def test_a_street_name_that_is_also_a_street_type_keeps_its_name() -> None:
    folded = std.fold_address_line(values("5 Pine Street", "9 Park Avenue South", "1 North Spring Road Suite 4",
                                          "22 Oak Ave", "9 Park Avenue S", "12 Main Street Apt 4"))
    assert folded.tolist() == ["5 PINE ST", "9 PARK AVE S", "1 N SPRING RD STE 4", "22 OAK AVE", "9 PARK AVE S",
                               "12 MAIN ST APT 4"]


def test_address_lines_fold_usps_abbreviations_so_variants_agree() -> None:
    folded = std.fold_address_line(values("12 North Main Street, Apartment 4", "12 N. Main St. Apt 4"))
    assert folded.tolist() == ["12 N MAIN ST APT 4", "12 N MAIN ST APT 4"]


def test_one_line_addresses_are_split_into_parts() -> None:
    parts = std.parse_one_line_addresses(values("12 Main St Apt 4, Springfield, IL 62704-1234"))
    assert parts.loc[0, ["line1", "line2", "city", "region"]].tolist() == ["12 Main St", "Apt 4", "Springfield", "IL"]
    assert parts.loc[0, "is_parsed"]


def test_us_states_become_two_letter_codes_and_zip_codes_five_digits() -> None:
    assert std.standardise_region(values("Illinois", "il", "Ill.")).tolist() == ["IL", "IL", "IL"]
    zips = std.standardise_postal_code(values("2134", "62704-1234", "SW1A 1AA"), values("US", "US", "GB"))
    assert zips.tolist() == ["02134", "62704", "SW1A 1AA"]


def test_country_names_and_codes_become_iso_alpha_2_and_unknown_ones_stay_empty() -> None:
    assert std.standardise_country(values("USA", "United Kingdom", None, "Narnia"), "US").tolist()[:3] == ["US", "GB", "US"]
    assert pd.isna(std.standardise_country(values("Narnia"), "US")[0])


def test_identifiers_ignore_spacing_case_and_dashes() -> None:
    assert std.standardise_identifiers(values("lm-7000 01", "LM700001")).tolist() == ["LM700001", "LM700001"]


@pytest.mark.parametrize("typed", ["(415) 555-2671", "415.555.2671", "+1 415 555 2671", "+44 20 7946 0958",
                                   "555-555-5555 x12", "not a phone", "  "])
def test_one_phone_standardises_exactly_as_a_column_does(typed: str) -> None:
    column = std.standardise_phones(pd.Series([typed], dtype="string"), "US")["phone_e164"].iloc[0]
    assert std.standardise_phone(typed, "US") == (None if pd.isna(column) else column)


@pytest.mark.parametrize("typed", [" A.B+shop@GMail.com ", "josé@example.org", "ann@", "x@y.com"])
def test_one_email_key_is_exactly_the_columns_key(typed: str) -> None:
    column = std.standardise_emails(pd.Series([typed.strip()], dtype="string"))["email_key"].iloc[0]
    assert std.standardise_email_key(typed) == (None if pd.isna(column) else column)
