//! Working-day arithmetic on the statutory holiday calendar (法定节假日 and 调休 make-up days).
//!
//! Several enforcement deadlines count working days (7 working days to serve a decision, 5 to
//! request a hearing). Which days are working days is set each year by the State Council's
//! holiday notice, including weekend days that become working days; the calendar is therefore
//! data, shipped as `data/holidays.json` and replaceable by an operator's own file. A year the
//! calendar does not cover is counted with weekends only, and [`Calendar::covers`] says so, so
//! a deadline in such a year can be shown as provisional rather than silently wrong.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;
use thiserror::Error;

/// The calendar shipped with this build (State Council notices).
const SHIPPED: &str = include_str!("../data/holidays.json");

/// A calendar file that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CalendarError {
    /// Not the expected JSON shape.
    #[error("invalid holiday calendar: {0}")]
    Invalid(String),
    /// A date that is not `YYYY-MM-DD` or a range that ends before it starts.
    #[error("invalid date or range in the holiday calendar: {0}")]
    Date(String),
}

#[derive(Deserialize)]
struct YearFile {
    holidays: Vec<(String, String)>,
    workdays: Vec<String>,
}

/// Statutory holidays and make-up working days, by year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeSet<i32>,
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
}

impl Calendar {
    /// The calendar shipped with this build.
    pub fn shipped() -> Self {
        Self::from_json(SHIPPED).expect("the shipped holiday calendar parses")
    }

    /// Reads a calendar file: `{"2026": {"holidays": [[from, to], ...], "workdays": [day, ...]}}`.
    pub fn from_json(text: &str) -> Result<Self, CalendarError> {
        let file: BTreeMap<String, YearFile> =
            serde_json::from_str(text).map_err(|err| CalendarError::Invalid(err.to_string()))?;
        let date = |text: &str| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| CalendarError::Date(text.to_owned()))
        };
        let mut calendar =
            Self { years: BTreeSet::new(), holidays: BTreeSet::new(), workdays: BTreeSet::new() };
        for (year, entry) in file {
            let year: i32 =
                year.parse().map_err(|_| CalendarError::Invalid(format!("year {year:?}")))?;
            calendar.years.insert(year);
            for (from, to) in &entry.holidays {
                let (from, to) = (date(from)?, date(to)?);
                if to < from {
                    return Err(CalendarError::Date(format!("{from}..{to}")));
                }
                calendar.holidays.extend(from.iter_days().take_while(|day| *day <= to));
            }
            for day in &entry.workdays {
                calendar.workdays.insert(date(day)?);
            }
        }
        Ok(calendar)
    }

    /// Whether the calendar holds the holiday notice of `year`.
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    /// Whether `day` is a working day: a make-up working day, or a weekday that is no holiday.
    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        if self.workdays.contains(&day) {
            return true;
        }
        !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&day)
    }

    /// The day on which a period of `working_days` working days that starts after `start`
    /// ends (the start day itself is not counted).
    pub fn add_working_days(&self, start: NaiveDate, working_days: u32) -> NaiveDate {
        let mut day = start;
        let mut counted = 0;
        while counted < working_days {
            day = day.checked_add_days(Days::new(1)).expect("dates stay far below the year 262143");
            if self.is_working_day(day) {
                counted += 1;
            }
        }
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[track_caller]
    fn check(start: &str, working_days: u32, expected: &str) {
        assert_eq!(Calendar::shipped().add_working_days(day(start), working_days), day(expected));
    }

    #[test]
    fn holidays_and_make_up_days_of_2026() {
        let calendar = Calendar::shipped();
        assert!(calendar.covers(2026));
        assert!(!calendar.is_working_day(day("2026-02-16")), "spring festival");
        assert!(calendar.is_working_day(day("2026-02-14")), "a Saturday made a working day");
        assert!(!calendar.is_working_day(day("2026-11-28")), "an ordinary Saturday");
        assert!(calendar.is_working_day(day("2026-11-27")), "an ordinary Friday");
    }

    #[test]
    fn working_days_skip_holidays_and_count_make_up_days() {
        // Across the national day holiday: 9/29, 9/30, 10/8, 10/9, 10/10 (make-up), 10/12, 10/13.
        check("2026-09-28", 7, "2026-10-13");
        // Five working days from a Friday: Mon to Fri of the next week.
        check("2026-11-27", 5, "2026-12-04");
        check("2026-11-27", 0, "2026-11-27");
    }

    #[test]
    fn a_year_not_covered_counts_weekends_only_and_says_so() {
        let calendar = Calendar::shipped();
        assert!(!calendar.covers(2027));
        assert_eq!(calendar.add_working_days(day("2027-01-01"), 1), day("2027-01-04"));
    }

    #[test]
    fn malformed_calendars_are_refused() {
        assert!(Calendar::from_json("[]").is_err());
        assert!(
            Calendar::from_json(
                r#"{"2026": {"holidays": [["2026-13-01", "2026-13-02"]], "workdays": []}}"#
            )
            .is_err()
        );
        assert!(
            Calendar::from_json(
                r#"{"2026": {"holidays": [["2026-02-02", "2026-02-01"]], "workdays": []}}"#
            )
            .is_err()
        );
    }
}
