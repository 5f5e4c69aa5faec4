//! When a webhook delivery is attempted: a fixed schedule like Svix's (immediately, then 5 s,
//! 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), each delay spread by jitter so that receivers that come
//! back after an outage are not hit by every pending delivery at once. Pure.
use std::time::Duration;

/// The default WEBHOOK_RETRY_SCHEDULE: the delay before each attempt, the first one included.
pub const DEFAULT_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

/// How much a delay may move either way (0.2: ±20 %).
pub const JITTER: f64 = 0.2;

/// The delays before each attempt; its length is the number of attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    /// Parse a comma-separated list of delays, each a number with a unit (`ms`, `s`, `m`, `h`;
    /// a bare number is seconds), e.g. `0s,5s,5m,30m`: the first attempt as soon as the job ends
    /// (so the first delay is 0), each later one that long after the attempt before it failed.
    /// At least one, at most 50 attempts.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let delays = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_delay)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the schedule needs at least one delay (e.g. 0s,5s,5m)".into());
        }
        if delays[0] != Duration::ZERO {
            return Err(
                "the first attempt is made as soon as the job ends: start the schedule with 0".into(),
            );
        }
        if delays.len() > 50 {
            return Err(format!("at most 50 attempts, got {}", delays.len()));
        }
        Ok(RetrySchedule { delays })
    }

    /// How many attempts a delivery gets in all.
    pub fn attempts(&self) -> u32 {
        self.delays.len() as u32
    }

    /// The longest a delivery can stay pending (the delays added up, before jitter).
    pub fn total(&self) -> Duration {
        self.delays.iter().sum()
    }

    /// The delay before attempt `made + 1` after `made` attempts failed, jittered by `unit`
    /// (a number in [0, 1): 0.5 is the delay itself); `None` when every attempt was made.
    pub fn next_delay(&self, made: u32, unit: f64) -> Option<Duration> {
        let base = *self.delays.get(made as usize)?;
        let factor = 1.0 + JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Some(base.mul_f64(factor))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE).expect("the default schedule parses")
    }
}

fn parse_delay(raw: &str) -> Result<Duration, String> {
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{raw}': expected a number with a unit (ms, s, m, h), e.g. 5m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("'{raw}': unknown unit '{other}' (ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds > 7.0 * 86_400.0 {
        return Err(format!("'{raw}': at most 7 days between attempts"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_svix_like() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 8);
        let mid: Vec<_> = (0..8).map(|n| schedule.next_delay(n, 0.5).unwrap()).collect();
        assert_eq!(
            mid,
            [0, 5, 300, 1800, 7200, 18000, 36000, 36000].map(Duration::from_secs)
        );
        assert_eq!(schedule.next_delay(8, 0.5), None);
        assert_eq!(schedule.total(), Duration::from_secs(99_305));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let schedule = RetrySchedule::parse("0,10s").unwrap();
        assert_eq!(schedule.next_delay(1, 0.0), Some(Duration::from_secs(8)));
        assert_eq!(schedule.next_delay(1, 1.0), Some(Duration::from_secs(12)));
        // Out-of-range inputs are clamped, never outside the band.
        assert_eq!(schedule.next_delay(1, 7.0), Some(Duration::from_secs(12)));
        // Immediately stays immediately.
        assert_eq!(
            RetrySchedule::parse("0").unwrap().next_delay(0, 0.9),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn units_and_errors() {
        let schedule = RetrySchedule::parse(" 0, 200ms ,1.5s,2m,1h").unwrap();
        assert_eq!(schedule.attempts(), 5);
        assert_eq!(schedule.next_delay(1, 0.5), Some(Duration::from_millis(200)));
        assert_eq!(schedule.next_delay(2, 0.5), Some(Duration::from_millis(1500)));
        assert_eq!(schedule.next_delay(4, 0.5), Some(Duration::from_secs(3600)));
        assert!(RetrySchedule::parse("").unwrap_err().contains("at least one"));
        assert!(
            RetrySchedule::parse("5s,1m")
                .unwrap_err()
                .contains("start the schedule with 0")
        );
        assert!(
            RetrySchedule::parse("5d")
                .unwrap_err()
                .contains("unknown unit 'd'")
        );
        assert!(
            RetrySchedule::parse("soon")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(RetrySchedule::parse("0,200h").unwrap_err().contains("7 days"));
    }
}
