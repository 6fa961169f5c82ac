//! The catalog's tables for access control: users with their role and scope, login sessions, API tokens and
//! the audit log. Secrets never reach this file in the clear: passwords arrive as argon2id PHC strings,
//! session ids and tokens as their SHA-256 (hex).

use rusqlite::{OptionalExtension, params};

use super::{Catalog, collect, now_ms};
use crate::error::{Error, Result};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every camera, the operator APIs and the audit log.
    Admin,
    /// Every camera and the operator APIs.
    Dev,
    /// Only the cameras of its scope.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dev => "dev",
            Role::Client => "client",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "dev" => Ok(Role::Dev),
            "client" => Ok(Role::Client),
            other => Err(format!("unknown role {other:?}: admin, dev or client")),
        }
    }
}

/// A user as stored (the hash is an argon2id PHC string).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub hash: String,
    /// A client sees the cameras of these factories…
    pub factories: Vec<String>,
    /// …and these cameras.
    pub cameras: Vec<String>,
    pub created_ms: i64,
    /// Last change of password, role or scope: sessions started before it end.
    pub changed_ms: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("hash", &"<redacted>")
            .field("factories", &self.factories)
            .field("cameras", &self.cameras)
            .finish()
    }
}

/// A login session as stored (`hash` is the SHA-256 of the session id).
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub hash: String,
    pub user: String,
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// The user's `changed_ms` when the session began (the session ends when it moves).
    pub user_changed_ms: i64,
}

/// An API token as stored (`hash` is the SHA-256 of the token).
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: i64,
    pub hash: String,
    pub user: String,
    pub label: String,
    pub created_ms: i64,
}

/// One line of the audit log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub event: String,
    pub user: Option<String>,
    pub addr: Option<String>,
    pub detail: Option<String>,
}

/// How many audit lines are kept (the oldest go first).
const AUDIT_KEEP: i64 = 200_000;

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(1)?;
    Ok(User {
        name: r.get(0)?,
        role: role.parse().unwrap_or(Role::Client),
        hash: r.get(2)?,
        factories: list(&r.get::<_, String>(3)?),
        cameras: list(&r.get::<_, String>(4)?),
        created_ms: r.get(5)?,
        changed_ms: r.get(6)?,
    })
}

const USER_COLUMNS: &str = "name, role, hash, factories, cameras, created_ms, changed_ms";

impl Catalog {
    /// Bumped on every change of users, tokens or sessions made by anyone (a running server reloads).
    pub fn auth_version(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'auth_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0))
        })
    }

    fn bump_auth(c: &rusqlite::Connection) -> rusqlite::Result<()> {
        c.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_version'",
            [],
        )?;
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<User>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
            let rows = st.query_map([], row_to_user)?;
            rows.collect()
        })
    }

    pub fn user(&self, name: &str) -> Result<Option<User>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [name],
                row_to_user,
            )
            .optional()
        })
    }

    /// Add a user; an existing name is an error (`Error::Conflict`).
    pub fn add_user(&self, u: &User) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
                [&u.name],
                |r| r.get(0),
            )
            .map_err(Error::from_sql)?;
        if exists {
            return Err(Error::Conflict(format!("user {:?} already exists", u.name)));
        }
        tx.execute(
            &format!("INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                u.name,
                u.role.as_str(),
                u.hash,
                u.factories.join(","),
                u.cameras.join(","),
                u.created_ms,
                u.changed_ms
            ],
        )
        .map_err(Error::from_sql)?;
        Self::bump_auth(&tx).map_err(Error::from_sql)?;
        tx.commit().map_err(Error::from_sql)
    }

    /// Replace a user's password hash; ends its sessions. False if there is no such user.
    pub fn set_password(&self, name: &str, hash: &str) -> Result<bool> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        let n = tx
            .execute(
                "UPDATE users SET hash = ?2, changed_ms = ?3 WHERE name = ?1",
                params![name, hash, now_ms()],
            )
            .map_err(Error::from_sql)?;
        tx.execute("DELETE FROM web_sessions WHERE user = ?1", [name])
            .map_err(Error::from_sql)?;
        Self::bump_auth(&tx).map_err(Error::from_sql)?;
        tx.commit().map_err(Error::from_sql)?;
        Ok(n > 0)
    }

    /// Remove a user with its sessions and tokens. False if there is no such user.
    pub fn remove_user(&self, name: &str) -> Result<bool> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        let n = tx
            .execute("DELETE FROM users WHERE name = ?1", [name])
            .map_err(Error::from_sql)?;
        tx.execute("DELETE FROM web_sessions WHERE user = ?1", [name])
            .map_err(Error::from_sql)?;
        tx.execute("DELETE FROM api_tokens WHERE user = ?1", [name])
            .map_err(Error::from_sql)?;
        Self::bump_auth(&tx).map_err(Error::from_sql)?;
        tx.commit().map_err(Error::from_sql)?;
        Ok(n > 0)
    }

    // ---- sessions ------------------------------------------------------------------------------------------

    pub fn web_sessions(&self) -> Result<Vec<StoredSession>> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT hash, user, csrf, created_ms, last_seen_ms, user_changed_ms FROM web_sessions")?;
            let rows = st.query_map([], |r| {
                Ok(StoredSession {
                    hash: r.get(0)?,
                    user: r.get(1)?,
                    csrf: r.get(2)?,
                    created_ms: r.get(3)?,
                    last_seen_ms: r.get(4)?,
                    user_changed_ms: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn save_web_session(&self, s: &StoredSession) -> Result<()> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO web_sessions (hash, user, csrf, created_ms, last_seen_ms, user_changed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![s.hash, s.user, s.csrf, s.created_ms, s.last_seen_ms, s.user_changed_ms],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    pub fn touch_web_session(&self, hash: &str, last_seen_ms: i64) -> Result<()> {
        self.writer()
            .execute(
                "UPDATE web_sessions SET last_seen_ms = ?2 WHERE hash = ?1",
                params![hash, last_seen_ms],
            )
            .map_err(Error::from_sql)?;
        Ok(())
    }

    /// Delete sessions by hash (logout, expiry).
    pub fn delete_web_sessions(&self, hashes: &[String]) -> Result<()> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        for h in hashes {
            tx.execute("DELETE FROM web_sessions WHERE hash = ?1", [h])
                .map_err(Error::from_sql)?;
        }
        tx.commit().map_err(Error::from_sql)
    }

    // ---- API tokens ------------------------------------------------------------------------------------------

    pub fn add_token(&self, hash: &str, user: &str, label: &str) -> Result<i64> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
                [user],
                |r| r.get(0),
            )
            .map_err(Error::from_sql)?;
        if !exists {
            return Err(Error::Conflict(format!("no user {user:?}")));
        }
        tx.execute(
            "INSERT INTO api_tokens (hash, user, label, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![hash, user, label, now_ms()],
        )
        .map_err(Error::from_sql)?;
        let id = tx.last_insert_rowid();
        Self::bump_auth(&tx).map_err(Error::from_sql)?;
        tx.commit().map_err(Error::from_sql)?;
        Ok(id)
    }

    pub fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT id, hash, user, label, created_ms FROM api_tokens ORDER BY id")?;
            let rows = st.query_map([], |r| {
                Ok(ApiToken {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    user: r.get(2)?,
                    label: r.get(3)?,
                    created_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Revoke a token by id. False if there is no such token.
    pub fn revoke_token(&self, id: i64) -> Result<bool> {
        let mut w = self.writer();
        let tx = w.transaction().map_err(Error::from_sql)?;
        let n = tx
            .execute("DELETE FROM api_tokens WHERE id = ?1", [id])
            .map_err(Error::from_sql)?;
        Self::bump_auth(&tx).map_err(Error::from_sql)?;
        tx.commit().map_err(Error::from_sql)?;
        Ok(n > 0)
    }

    // ---- audit -----------------------------------------------------------------------------------------------

    /// Append to the audit log (the oldest lines beyond the last 200 000 go).
    pub fn audit(
        &self,
        event: &str,
        user: Option<&str>,
        addr: Option<&str>,
        detail: Option<&str>,
    ) -> Result<()> {
        let w = self.writer();
        w.execute(
            "INSERT INTO audit (at_ms, event, user, addr, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_ms(), event, user, addr, detail],
        )
        .map_err(Error::from_sql)?;
        let id = w.last_insert_rowid();
        if id % 1000 == 0 {
            w.execute("DELETE FROM audit WHERE id <= ?1", [id - AUDIT_KEEP])
                .map_err(Error::from_sql)?;
        }
        Ok(())
    }

    /// The newest `limit` audit lines, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows = self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, at_ms, event, user, addr, detail FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st
                .query_map([limit as i64], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        event: r.get(2)?,
                        user: r.get(3)?,
                        addr: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?
                .collect::<Vec<_>>();
            Ok(rows)
        })?;
        collect(rows.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> User {
        User {
            name: name.into(),
            role,
            hash: "$argon2id$x".into(),
            factories: vec!["f1".into()],
            cameras: vec![],
            created_ms: 1,
            changed_ms: 1,
        }
    }

    #[test]
    fn users_sessions_and_tokens_round_trip_and_every_change_bumps_the_version() {
        let c = Catalog::in_memory().unwrap();
        let v0 = c.auth_version().unwrap();
        c.add_user(&user("alice", Role::Client)).unwrap();
        assert!(matches!(
            c.add_user(&user("alice", Role::Admin)),
            Err(Error::Conflict(_))
        ));
        let v1 = c.auth_version().unwrap();
        assert!(v1 > v0);
        let u = c.user("alice").unwrap().unwrap();
        assert_eq!(
            (u.role, u.factories.clone()),
            (Role::Client, vec!["f1".to_string()])
        );
        assert!(!format!("{u:?}").contains("argon2id"), "{u:?}");
        c.save_web_session(&StoredSession {
            hash: "h".into(),
            user: "alice".into(),
            csrf: "c".into(),
            created_ms: 1,
            last_seen_ms: 1,
            user_changed_ms: 1,
        })
        .unwrap();
        let id = c.add_token("t", "alice", "nvr-sync").unwrap();
        assert!(matches!(
            c.add_token("t2", "bob", "x"),
            Err(Error::Conflict(_))
        ));
        assert_eq!(c.tokens().unwrap()[0].id, id);
        assert!(c.set_password("alice", "$argon2id$y").unwrap());
        assert!(
            c.web_sessions().unwrap().is_empty(),
            "a new password ends sessions"
        );
        assert!(c.remove_user("alice").unwrap());
        assert!(c.tokens().unwrap().is_empty());
        assert!(!c.remove_user("alice").unwrap());
        assert!(c.auth_version().unwrap() > v1);
        c.audit(
            "login_failed",
            Some("alice"),
            Some("127.0.0.1"),
            Some("wrong password"),
        )
        .unwrap();
        assert_eq!(c.audit_log(10).unwrap()[0].event, "login_failed");
    }

    /// `vigil token add` next to a running vigil: the running process holds the write lock and commits while
    /// the CLI's transaction has already read. A deferred transaction fails with "database is locked" at once;
    /// an immediate one waits for the lock and succeeds.
    #[test]
    fn a_second_process_writing_meanwhile_makes_a_token_wait_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let running = Catalog::open(&path).unwrap();
        running.add_user(&user("alice", Role::Client)).unwrap();
        let cli = Catalog::open(&path).unwrap();

        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        other
            .execute(
                "INSERT INTO audit (at_ms, event) VALUES (1, 'meanwhile')",
                [],
            )
            .unwrap();
        let started = std::time::Instant::now();
        let holder = std::thread::spawn(move || {
            // Hold the write lock while the CLI's transaction starts (this forces the interleaving), then commit.
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let r = cli.add_token("t", "alice", "test");
        holder.join().unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(250),
            "the token waited for the other writer"
        );
        assert_eq!(running.tokens().unwrap().len(), 1);
    }
}
