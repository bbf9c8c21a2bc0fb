//! Posts per language per UTC day (event time): a whole consumer written with kit.
//!
//! `NATS_URL=nats://127.0.0.1:4222 cargo run -p kit --example langs`, then
//! `sqlite3 langs.db 'SELECT * FROM langs ORDER BY posts DESC LIMIT 10'`.
use kit::rusqlite::{self, Transaction};
use kit::{HandleError, Handler, Msg, Rebuild};

const DAY_US: i64 = 86_400_000_000;

#[derive(serde::Deserialize)]
struct Post {
    #[serde(default)]
    langs: Vec<String>,
}

struct Langs;

impl Handler for Langs {
    const POISON_REASONS: &'static [&'static str] = &["bad_post"];

    fn init(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS langs (day INTEGER, lang TEXT, posts INTEGER,
             PRIMARY KEY (day, lang))",
        )
    }

    fn rebuild_from(&self, t: i64) -> i64 {
        t.div_euclid(DAY_US) * DAY_US // a day is counted whole
    }

    fn rebuild(&mut self, tx: &Transaction<'_>, from: Rebuild) -> rusqlite::Result<()> {
        let day = match from {
            Rebuild::All => i64::MIN,
            Rebuild::Since(t) => t.div_euclid(DAY_US),
        };
        tx.execute("DELETE FROM langs WHERE day >= ?1", [day])
            .map(drop)
    }

    fn handle(&mut self, tx: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError> {
        let Some(record) = msg.event.commit().and_then(|c| c.record_as::<Post>()) else {
            return Ok(()); // a delete, or a tooBig op without its record
        };
        let post = record.map_err(|_| HandleError::Poison("bad_post"))?;
        let mut add = tx.prepare_cached(
            "INSERT INTO langs VALUES (?1, ?2, 1)
             ON CONFLICT (day, lang) DO UPDATE SET posts = posts + 1",
        )?;
        for lang in post.langs.iter().take(3).filter(|l| l.len() <= 16) {
            add.execute((msg.event.time_us.div_euclid(DAY_US), lang))?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), kit::Error> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let opts = kit::Options::new("langs", &[contract::subject::POSTS]);
    kit::run_with_signals(&url, opts, Langs).await
}
