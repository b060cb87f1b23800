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
