"""The demo generator: the population it makes must be one the real world allows."""

from c360_pipelines.core.standardise import standardise_email_key
from c360_pipelines.demo import Person, generate_people


def one_family_sharing(owners: list[Person]) -> bool:
    homes = {(person.last, str(person.address)) for person in owners}
    return len(homes) == 1 and all("shared_email" in person.tags for person in owners)


def test_no_two_demo_people_own_one_mailbox_unless_a_family_shares_it() -> None:
    owners: dict[str, list[Person]] = {}
    for person in generate_people(20_000, seed=360):
        for email in {person.email, person.new_email} - {None}:
            owners.setdefault(standardise_email_key(email) or email, []).append(person)
    # Gmail ignores dots: john.smith@gmail.com and johnsmith@gmail.com are one inbox, so one owner
    shared = [people for people in owners.values() if len(people) > 1]
    assert shared and all(one_family_sharing(people) for people in shared)


def test_the_same_seed_gives_the_same_people_on_any_day_ages_counted_on_a_fixed_day() -> None:
    from c360_pipelines.demo import REFERENCE_DAY

    people = generate_people(3_000, seed=7)
    day = (REFERENCE_DAY.month, REFERENCE_DAY.day)
    ages = {REFERENCE_DAY.year - int(p.birth[:4]) - (day < (int(p.birth[5:7]), int(p.birth[8:10]))) for p in people}
    assert min(ages) == 18 and max(ages) == 90  # counted from today, the youngest would be younger by now
    assert [p.birth for p in people] == [p.birth for p in generate_people(3_000, seed=7)]
