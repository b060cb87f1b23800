"""Stage 1 of the core: turn raw source text into standard forms, one vectorised function per kind of value.

Every function takes pandas Series of raw text and returns Series or DataFrames aligned to the input index;
none of them raise on bad values (a value that does not parse comes back empty, with a flag where the model
has one). The expensive parsers (libphonenumber, usaddress, nameparser, dateutil) run once per distinct
value after cheap formatting noise is folded away, which is what keeps staging fast at a million rows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

import nameparser
import numpy as np
import pandas as pd
import phonenumbers
import pycountry
import usaddress
from scourgify import address_constants as usps

# Arrow-backed strings: pandas runs .str methods as vectorised Arrow kernels instead of a Python loop.
TEXT = pd.StringDtype("pyarrow")

# The local part is any printable character but the specials of RFC 5322, non-ASCII letters included: an
# internationalised address (RFC 6531, SMTPUTF8) such as josé@example.com is deliverable.
_EMAIL_PATTERN = (
    r"^[^\x00-\x20\"(),:;<>@\[\\\]\x7f]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_GMAIL_DOMAINS = ("gmail.com", "googlemail.com")


def blank_to_na(values: pd.Series) -> pd.Series:
    """Trim and collapse white space; empty strings become missing."""
    text = values.astype(TEXT).str.strip().str.replace(r"\s+", " ", regex=True)
    return text.mask(text == "")


def on_distinct(values: pd.Series, parse: Callable[[pd.Series], pd.DataFrame | pd.Series]) -> pd.DataFrame:
    """Apply an expensive `parse` to each distinct non-missing value once, and spread the result back."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    parsed = parse(pd.Series(uniques, dtype="object"))
    frame = parsed.to_frame() if isinstance(parsed, pd.Series) else parsed
    frame = frame.reset_index(drop=True)
    empty_row = pd.DataFrame({column: [pd.NA] for column in frame.columns}).astype(frame.dtypes.to_dict(), errors="ignore")
    padded = pd.concat([frame, empty_row], ignore_index=True)
    positions = np.where(codes < 0, len(frame), codes)
    result = padded.iloc[positions].reset_index(drop=True)
    result.index = values.index
    return result


# ---------------------------------------------------------------------------------------------- email


def standardise_emails(raw: pd.Series) -> pd.DataFrame:
    """email (trimmed, lower case), email_key (gmail dots and +tags folded), domain, is_valid."""
    email = blank_to_na(raw).str.lower()
    is_valid = email.str.fullmatch(_EMAIL_PATTERN).fillna(False).astype(bool)
    parts = email.str.rsplit("@", n=1, expand=True).reindex(columns=[0, 1])
    local, domain = parts[0].astype(TEXT), parts[1].astype(TEXT)
    local = local.str.replace(r"\+.*$", "", regex=True)
    is_gmail = domain.isin(_GMAIL_DOMAINS)
    local = local.mask(is_gmail, local.str.replace(".", "", regex=False))
    domain_key = domain.mask(is_gmail, "gmail.com")
    key = (local + "@" + domain_key).where(is_valid)
    return pd.DataFrame(
        {"email": email, "email_key": key, "domain": domain.where(is_valid), "is_valid": is_valid},
        index=raw.index,
    )


# ---------------------------------------------------------------------------------------------- phone

_PHONE_COLUMNS = ["phone_e164", "extension", "phone_region", "phone_type", "is_valid"]
_PHONE_TYPES = {value: name.lower() for name, value in vars(phonenumbers.PhoneNumberType).items() if name.isupper()}


def standardise_phones(raw: pd.Series, default_region: str) -> pd.DataFrame:
    """phone_e164, extension, phone_region, phone_type and is_valid, parsed with libphonenumber.

    Numbers that differ only in punctuation and spacing share one parse: the parse key is the digits (with a
    leading + kept), unless the text has letters (an extension such as `x12`, or a vanity number).
    """
    text = blank_to_na(raw)
    has_letters = text.str.contains(r"[A-Za-z]", regex=True).fillna(False)
    digits = text.str.replace(r"[^\d]", "", regex=True)
    plus = text.str.startswith("+").fillna(False)
    key = digits.mask(plus, "+" + digits).mask(has_letters, text)
    key = key.mask(key == "")
    parsed = on_distinct(key, lambda keys: _parse_phone_keys(keys.tolist(), default_region))
    parsed["is_valid"] = parsed["is_valid"].astype("boolean").fillna(False).astype(bool)
    return parsed


def standardise_phone(text: str, default_region: str) -> str | None:
    """One number's E.164 form, by exactly the rules of `standardise_phones` (for a lookup, not a batch)."""
    text = text.strip()
    if not text:
        return None
    digits = re.sub(r"[^\d]", "", text)
    key = text if re.search(r"[A-Za-z]", text) else ("+" + digits if text.startswith("+") else digits)
    if not key:
        return None
    nanp = phonenumbers.country_code_for_region(default_region) == 1
    e164 = _parse_phone(key, default_region, nanp)[0]
    return e164 if isinstance(e164, str) else None


def standardise_email_key(text: str) -> str | None:
    """One address's matching key, by exactly the rules of `standardise_emails` (for a lookup, not a batch)."""
    email = text.strip().lower()
    if not email or not re.fullmatch(_EMAIL_PATTERN, email):
        return None
    local, domain = email.rsplit("@", 1)
    local = re.sub(r"\+.*$", "", local)
    if domain in _GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def _parse_phone_keys(keys: list[str], region: str) -> pd.DataFrame:
    return pd.DataFrame(_parse_phone_chunk(keys, region), columns=_PHONE_COLUMNS)


def _parse_phone_chunk(keys: list[str], region: str) -> list[tuple[object, ...]]:
    nanp = phonenumbers.country_code_for_region(region) == 1
    return [_parse_phone(key, region, nanp) for key in keys]


def _parse_phone(key: str, region: str, nanp: bool) -> tuple[object, ...]:
    number = _nanp_number(key) if nanp else None
    if number is None:
        try:
            number = phonenumbers.parse(key, region)
        except phonenumbers.NumberParseException:
            return (None, None, None, None, False)
    # A number is valid exactly when libphonenumber can give it a type: one lookup instead of four.
    number_type = phonenumbers.number_type(number)
    valid = number_type != phonenumbers.PhoneNumberType.UNKNOWN
    national = phonenumbers.national_significant_number(number)
    return (
        f"+{number.country_code}{national}" if len(national.strip("0")) >= 4 else None,
        number.extension,
        phonenumbers.region_code_for_number(number) if valid else None,
        _PHONE_TYPES.get(number_type),
        valid,
    )


def _nanp_number(key: str) -> phonenumbers.PhoneNumber | None:
    """The number `parse` would build for plain 10-digit NANP keys (or with a leading 1 / +1), without parsing."""
    digits = key[2:] if key.startswith("+1") else key[1:] if len(key) == 11 and key[0] == "1" else key
    if len(digits) != 10 or not digits.isdigit() or (key.startswith("+") and not key.startswith("+1")):
        return None
    return phonenumbers.PhoneNumber(country_code=1, national_number=int(digits))


# ---------------------------------------------------------------------------------------------- names


def clean_name(raw: pd.Series) -> pd.Series:
    """Trim, collapse spaces, drop stray punctuation; ALL CAPS or all lower case becomes Title Case."""
    text = blank_to_na(raw).str.replace(r"^[\s.,;]+|[\s,;]+$", "", regex=True)
    text = text.mask(text == "")
    single_case = (text == text.str.upper()) | (text == text.str.lower())
    return text.mask(single_case.fillna(False), text.str.title())


def name_norm(names: pd.Series) -> pd.Series:
    """Fold a name for matching: accents removed, lower case, letters only (O'Brien-Smith -> obriensmith)."""
    folded = on_distinct(names.astype(TEXT), lambda distinct: distinct.map(_fold_name)).iloc[:, 0].astype(TEXT)
    return folded.mask(folded == "")


def fold_name(name: str) -> str:
    """One name folded as `name_norm` folds a column: accents removed, lower case, letters only."""
    return _fold_name(name)


def _fold_name(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return _NON_LETTERS.sub("", ascii_name.lower())


_NON_LETTERS = re.compile(r"[^a-z]")


def parse_full_names(raw: pd.Series) -> pd.DataFrame:
    """Split one-field names ("Dr. Mary Ann O'Neil Jr", "Smith, John") into first, middle, last and suffix."""
    columns = ["first_name", "middle_name", "last_name", "name_suffix"]
    return on_distinct(blank_to_na(raw), lambda names: pd.DataFrame([_split_name(n) for n in names], columns=columns))


def _split_name(text: str) -> dict[str, str | None]:
    name = nameparser.HumanName(text)
    return {
        "first_name": name.first or None,
        "middle_name": name.middle or None,
        "last_name": name.last or None,
        "name_suffix": name.suffix or None,
    }


_GENDERS = {
    "f": "F", "female": "F", "w": "F", "woman": "F",
    "m": "M", "male": "M", "man": "M",
    "x": "X", "other": "X", "nonbinary": "X", "non-binary": "X", "diverse": "X",
}


def standardise_gender(raw: pd.Series) -> pd.Series:
    return on_distinct(blank_to_na(raw).str.lower(), lambda values: values.map(_GENDERS)).iloc[:, 0].astype(TEXT)


# ---------------------------------------------------------------------------------------------- dates


def parse_datetimes(raw: pd.Series, formats: Sequence[str] = ()) -> pd.Series:
    """Parse with the declared formats in order; with none declared, ISO 8601 then anything dateutil reads.

    Values with a zone (Z, +02:00) are converted to UTC; values without one are taken as UTC already. The
    two kinds are parsed apart because pandas would otherwise apply one value's offset to the others.
    Unparseable values are NaT.
    """
    text = blank_to_na(raw)
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    zoned = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True).fillna(False).astype(bool)
    attempts: list[dict[str, object]] = [{"format": f} for f in formats] or [{"format": "ISO8601"}, {"format": "mixed"}]
    for attempt in attempts:
        for group in (zoned, ~zoned):
            pending = result.isna() & text.notna() & group
            if not pending.any():
                continue
            parsed = pd.to_datetime(text[pending], errors="coerce", utc=True, **attempt)  # type: ignore[call-overload]
            result.loc[pending] = parsed.dt.tz_localize(None).astype("datetime64[ns]")
    return result


def parse_birth_dates(raw: pd.Series, formats: Sequence[str] = (), today: pd.Timestamp | None = None) -> pd.DataFrame:
    """birth_date and birth_date_valid; impossible dates (Feb 30, the future, before 1875) are invalid."""
    text = blank_to_na(raw)
    parsed = on_distinct(text, lambda values: parse_datetimes(values, formats).rename("parsed"))["parsed"]
    parsed = pd.to_datetime(parsed)
    today = today or pd.Timestamp.now().normalize()
    plausible = (parsed >= pd.Timestamp("1875-01-01")) & (parsed <= today)
    birth_date = parsed.where(plausible).dt.date
    return pd.DataFrame(
        {
            "birth_date": birth_date.astype("object").where(plausible, None),
            "birth_date_valid": plausible.where(text.notna()).astype("boolean"),
        },
        index=raw.index,
    )


def parse_amounts(raw: pd.Series) -> pd.Series:
    """Read money amounts: currency signs, thousands separators and spaces are removed."""
    text = blank_to_na(raw).str.replace(r"[^\d.\-]", "", regex=True)
    return pd.to_numeric(text, errors="coerce")


# ---------------------------------------------------------------------------------------------- addresses

_STREET_TYPES = {k.upper(): v.upper() for k, v in usps.STREET_TYPE_ABBREVIATIONS.items()}
_DIRECTIONALS = {k.upper(): v.upper() for k, v in usps.DIRECTIONAL_REPLACEMENTS.items()}
_OCCUPANCY = {k.upper(): v.upper() for k, v in usps.OCCUPANCY_TYPE_ABBREVIATIONS.items()}
_STATES = {k.upper(): v.upper() for k, v in usps.STATE_ABBREVIATIONS.items()}
_LINE_WORDS = {**_STREET_TYPES, **_DIRECTIONALS, **_OCCUPANCY}


def fold_address_line(raw: pd.Series) -> pd.Series:
    """Upper case, punctuation removed, USPS Pub 28 abbreviations: '12 North Main Street, Apt. 4' -> '12 N MAIN ST APT 4'."""
    text = blank_to_na(raw).str.upper().str.replace(r"[.,;:]", " ", regex=True)
    text = text.str.replace(r"#\s*", "# ", regex=True).str.replace(r"\s+", " ", regex=True).str.strip()
    folded = on_distinct(text, lambda lines: lines.map(_abbreviate_words))
    return folded.iloc[:, 0].astype(TEXT)


_PHRASES = {key: value for key, value in _LINE_WORDS.items() if " " in key}
_PHRASE_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _PHRASES), key=len, reverse=True)) + r")\b")


def _abbreviate_words(line: str) -> str:
    """Abbreviate by position, as Pub 28 does: the street type is the last word of the street (PINE in '5 Pine
    St' is a name, not a suffix), a directional comes first or last, and the unit words follow the street."""
    line = _PHRASE_PATTERN.sub(lambda match: _PHRASES[match.group(1)], line)
    words = line.split(" ")
    unit = next((n for n, word in enumerate(words) if word in _UNIT_WORDS), len(words))
    street = words[:unit]
    first = 1 if street and street[0][:1].isdigit() else 0
    last = len(street) - 1
    if last > first and street[last] in _DIRECTIONAL_WORDS:
        street[last] = _DIRECTIONALS.get(street[last], street[last])
        last -= 1
    if last > first and street[first] in _DIRECTIONAL_WORDS:
        street[first] = _DIRECTIONALS.get(street[first], street[first])
    if last > first:
        street[last] = _STREET_TYPES.get(street[last], street[last])
    return " ".join(street + [_OCCUPANCY.get(word, word) for word in words[unit:]])


# each word as written in full or already abbreviated
_UNIT_WORDS = {*_OCCUPANCY, *_OCCUPANCY.values(), "#"}
_DIRECTIONAL_WORDS = {*_DIRECTIONALS, *_DIRECTIONALS.values()}


def standardise_city(raw: pd.Series) -> pd.Series:
    return blank_to_na(raw).str.upper().str.replace(r"[.,]", "", regex=True)


def standardise_region(raw: pd.Series) -> pd.Series:
    """US state names and variants become their 2-letter code; other regions are upper-cased."""
    text = blank_to_na(raw).str.upper().str.replace(".", "", regex=False).str.strip()
    return on_distinct(text, lambda regions: regions.map(lambda r: _STATES.get(r, r))).iloc[:, 0].astype(TEXT)


def standardise_postal_code(raw: pd.Series, country: pd.Series) -> pd.Series:
    """US ZIP codes as 5 digits (ZIP+4 cut, a leading zero lost by a spreadsheet restored); others upper case."""
    text = blank_to_na(raw).str.upper()
    digits = text.str.replace(r"[^\d]", "", regex=True)
    is_us = country.fillna("US").eq("US")
    us_zip = digits.where(digits.str.len().isin([4, 5, 9])).str.slice(0, 5).str.zfill(5)
    us_zip = us_zip.mask(digits.str.len() == 9, digits.str.slice(0, 5))
    return text.mask(is_us, us_zip).astype(TEXT)


def standardise_country(raw: pd.Series, default: str) -> pd.Series:
    """ISO 3166 alpha-2 from codes or names ('USA', 'United States', 'us'); the source default when empty."""
    text = blank_to_na(raw)
    codes = on_distinct(text, lambda names: names.map(_country_code)).iloc[:, 0].astype(TEXT)
    return codes.mask(text.isna(), default)


@lru_cache(maxsize=4096)
def _country_code(name: str) -> str | None:
    aliases = {"UK": "GB", "ENGLAND": "GB", "SCOTLAND": "GB", "WALES": "GB", "U.S.": "US", "U.S.A.": "US"}
    key = name.strip().upper()
    if key in aliases:
        return aliases[key]
    try:
        return pycountry.countries.lookup(key).alpha_2
    except LookupError:
        return None


_ADDRESS_LABELS = {
    "line1": (
        "AddressNumberPrefix", "AddressNumber", "AddressNumberSuffix", "StreetNamePreModifier",
        "StreetNamePreDirectional", "StreetNamePreType", "StreetName", "StreetNamePostType",
        "StreetNamePostDirectional", "StreetNamePostModifier", "USPSBoxType", "USPSBoxID",
        "USPSBoxGroupType", "USPSBoxGroupID", "BuildingName", "LandmarkName", "CornerOf",
        "IntersectionSeparator", "SecondStreetName", "SecondStreetNamePostType",
    ),
    "line2": ("OccupancyType", "OccupancyIdentifier", "SubaddressType", "SubaddressIdentifier"),
    "city": ("PlaceName",),
    "region": ("StateName",),
    "postal_code": ("ZipCode",),
    "country": ("CountryName",),
}


def parse_one_line_addresses(raw: pd.Series) -> pd.DataFrame:
    """Split '12 Main St Apt 4, Springfield, IL 62704' into line1, line2, city, region, postal_code, country.

    Uses usaddress (a CRF model of US addresses); is_parsed is False when it finds no street line.
    """
    columns = [*_ADDRESS_LABELS, "is_parsed"]
    return on_distinct(
        blank_to_na(raw), lambda lines: pd.DataFrame([_split_address(line) for line in lines], columns=columns)
    )


def _split_address(text: str) -> dict[str, object]:
    try:
        tagged, _ = usaddress.tag(text)
    except usaddress.RepeatedLabelError as error:
        tagged = {}
        for token, label in error.parsed_string:
            tagged[label] = f"{tagged[label]} {token}" if label in tagged else token
    parts: dict[str, object] = {}
    for part, labels in _ADDRESS_LABELS.items():
        words = [str(tagged[label]).strip(" ,") for label in labels if label in tagged]
        parts[part] = " ".join(w for w in words if w) or None
    parts["is_parsed"] = parts["line1"] is not None
    return parts


def standardise_identifiers(raw: pd.Series) -> pd.Series:
    """Upper case with spaces, dots and dashes removed, so 'ab-12 34' and 'AB1234' are the same identifier."""
    text = blank_to_na(raw).str.upper().str.replace(r"[\s.\-]", "", regex=True)
    return text.mask(text == "")
