//! Registry state and its durability: every change is one JSON line appended (and synced)
//! to `registry.log` in the data directory before it is acknowledged; start-up replays the
//! log, so ids and versions survive restarts unchanged.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use super::compat::CompatibilityLevel;

/// An error in Confluent's vocabulary: HTTP status, `error_code` and message.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    /// 40403.
    #[error("{0}")]
    SchemaNotFound(String),
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// 409.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{details}]"
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// Why, joined.
        details: String,
    },
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// 42203.
    #[error(
        "Invalid compatibility level '{0}'. Valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
    )]
    InvalidCompatibilityLevel(String),
    /// 50001.
    #[error("Error while storing the schema: {0}")]
    Storage(String),
}

impl RegistryError {
    /// `(HTTP status, Confluent error_code)`.
    pub fn codes(&self) -> (u16, u32) {
        match self {
            RegistryError::SubjectNotFound(_) => (404, 40401),
            RegistryError::VersionNotFound(_) => (404, 40402),
            RegistryError::SchemaNotFound(_) => (404, 40403),
            RegistryError::SubjectConfigNotFound(_) => (404, 40408),
            RegistryError::Incompatible { .. } => (409, 409),
            RegistryError::InvalidSchema(_) => (422, 42201),
            RegistryError::InvalidVersion(_) => (422, 42202),
            RegistryError::InvalidCompatibilityLevel(_) => (422, 42203),
            RegistryError::Storage(_) => (500, 50001),
        }
    }
}

/// A registered schema version as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegisteredVersion {
    /// Subject name.
    pub subject: String,
    /// Version within the subject, from 1.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Schema text as registered.
    pub schema: String,
}

/// Which version a request names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VersionRef {
    /// `latest` or `-1`.
    Latest,
    /// A number from 1.
    Number(u32),
}

impl VersionRef {
    /// Parses a version path segment.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        match s {
            "latest" | "-1" => Ok(VersionRef::Latest),
            _ => match s.parse::<u32>() {
                Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(VersionRef::Number(n)),
                _ => Err(RegistryError::InvalidVersion(s.to_string())),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum LogEntry {
    Register {
        subject: String,
        version: u32,
        id: u32,
        schema: String,
    },
    DeleteVersion {
        subject: String,
        version: u32,
        permanent: bool,
    },
    SetConfig {
        subject: Option<String>,
        level: Option<CompatibilityLevel>,
    },
}

struct StoredSchema {
    text: String,
    parsed: Schema,
}

#[derive(Default)]
struct Subject {
    /// (version, id, soft-deleted)
    versions: Vec<(u32, u32, bool)>,
    level: Option<CompatibilityLevel>,
}

impl Subject {
    fn live(&self) -> impl Iterator<Item = &(u32, u32, bool)> {
        self.versions.iter().filter(|v| !v.2)
    }
}

#[derive(Default)]
struct State {
    schemas: Vec<StoredSchema>,
    by_key: HashMap<String, u32>,
    subjects: BTreeMap<String, Subject>,
    global_level: CompatibilityLevel,
}

impl State {
    fn apply(&mut self, entry: LogEntry) -> Result<(), RegistryError> {
        match entry {
            LogEntry::Register {
                subject,
                version,
                id,
                schema,
            } => {
                let (parsed, key) = parse(&schema)?;
                if id as usize > self.schemas.len() {
                    self.schemas.push(StoredSchema {
                        text: schema,
                        parsed,
                    });
                    self.by_key.insert(key, id);
                }
                self.subjects
                    .entry(subject)
                    .or_default()
                    .versions
                    .push((version, id, false));
            }
            LogEntry::DeleteVersion {
                subject,
                version,
                permanent,
            } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    if permanent {
                        s.versions.retain(|v| v.0 != version);
                    } else if let Some(v) = s.versions.iter_mut().find(|v| v.0 == version) {
                        v.2 = true;
                    }
                    if s.versions.is_empty() && s.level.is_none() {
                        self.subjects.remove(&subject);
                    }
                }
            }
            LogEntry::SetConfig {
                subject: None,
                level,
            } => {
                self.global_level = level.unwrap_or_default();
            }
            LogEntry::SetConfig {
                subject: Some(subject),
                level,
            } => {
                self.subjects.entry(subject).or_default().level = level;
            }
        }
        Ok(())
    }

    fn subject(&self, name: &str) -> Result<&Subject, RegistryError> {
        self.subjects
            .get(name)
            .filter(|s| s.live().next().is_some())
            .ok_or_else(|| RegistryError::SubjectNotFound(name.to_string()))
    }

    fn version(&self, name: &str, v: VersionRef) -> Result<RegisteredVersion, RegistryError> {
        let subject = self.subject(name)?;
        let found = match v {
            VersionRef::Latest => subject.live().last(),
            VersionRef::Number(n) => subject.live().find(|x| x.0 == n),
        };
        let &(version, id, _) = found.ok_or_else(|| {
            RegistryError::VersionNotFound(match v {
                VersionRef::Latest => "latest".into(),
                VersionRef::Number(n) => n.to_string(),
            })
        })?;
        Ok(RegisteredVersion {
            subject: name.to_string(),
            version,
            id,
            schema: self.schemas[id as usize - 1].text.clone(),
        })
    }
}

/// Parses an Avro schema and derives its identity: the JSON re-serialised compactly with
/// sorted keys, so whitespace and key order do not make a "new" schema, while docs and
/// defaults (which the Parsing Canonical Form would drop) still do.
fn parse(text: &str) -> Result<(Schema, String), RegistryError> {
    let parsed =
        Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    Ok((parsed, json.to_string()))
}

/// The registry: in-memory state backed by an append-only log.
pub struct SchemaStore {
    state: Mutex<State>,
    log: Mutex<File>,
    path: PathBuf,
}

impl SchemaStore {
    /// Opens (or creates) the registry stored in `dir`, replaying its log.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("registry.log");
        let mut state = State::default();
        if path.exists() {
            for (n, line) in BufReader::new(File::open(&path)?).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let entry: LogEntry = match serde_json::from_str(&line) {
                    Ok(e) => e,
                    // A torn last line (crash mid-write) was never acknowledged: drop it.
                    Err(e) => {
                        tracing::warn!(line = n + 1, error = %e, "ignoring unreadable registry log line");
                        continue;
                    }
                };
                state
                    .apply(entry)
                    .map_err(|e| anyhow::anyhow!("registry log line {}: {e}", n + 1))?;
            }
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(SchemaStore {
            state: Mutex::new(state),
            log: Mutex::new(log),
            path,
        })
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, state: &mut State, entry: LogEntry) -> Result<(), RegistryError> {
        let mut line =
            serde_json::to_string(&entry).map_err(|e| RegistryError::Storage(e.to_string()))?;
        line.push('\n');
        let mut log = self.log.lock().expect("registry log lock");
        log.write_all(line.as_bytes())
            .and_then(|_| log.sync_data())
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        state.apply(entry)
    }

    /// Registers `schema` under `subject` (idempotent); returns its global id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let (parsed, key) = parse(schema)?;
        let mut state = self.state.lock().expect("registry lock");
        let existing_id = state.by_key.get(&key).copied();
        if let (Some(id), Some(s)) = (existing_id, state.subjects.get(subject))
            && s.live().any(|v| v.1 == id)
        {
            return Ok(id);
        }
        let level = state
            .subjects
            .get(subject)
            .and_then(|s| s.level)
            .unwrap_or(state.global_level);
        let previous: Vec<Schema> = state
            .subjects
            .get(subject)
            .map(|s| {
                s.live()
                    .map(|v| state.schemas[v.1 as usize - 1].parsed.clone())
                    .collect()
            })
            .unwrap_or_default();
        let problems = level.check(&parsed, &previous);
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.to_string(),
                details: problems.join("; "),
            });
        }
        let version = state
            .subjects
            .get(subject)
            .and_then(|s| s.versions.iter().map(|v| v.0).max())
            .unwrap_or(0)
            + 1;
        let id = existing_id.unwrap_or(state.schemas.len() as u32 + 1);
        self.append(
            &mut state,
            LogEntry::Register {
                subject: subject.to_string(),
                version,
                id,
                schema: schema.to_string(),
            },
        )?;
        Ok(id)
    }

    /// Finds `schema` among the live versions of `subject`.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<RegisteredVersion, RegistryError> {
        let (_, key) = parse(schema)?;
        let state = self.state.lock().expect("registry lock");
        let s = state.subject(subject)?;
        let id = state.by_key.get(&key).copied();
        let found = s.live().find(|v| Some(v.1) == id).copied();
        match found {
            Some((version, _, _)) => state.version(subject, VersionRef::Number(version)),
            None => Err(RegistryError::SchemaNotFound("Schema not found".into())),
        }
    }

    /// Schema text by global id.
    pub fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let state = self.state.lock().expect("registry lock");
        id.checked_sub(1)
            .and_then(|i| state.schemas.get(i as usize))
            .map(|s| s.text.clone())
            .ok_or_else(|| RegistryError::SchemaNotFound(format!("Schema {id} not found")))
    }

    /// `(subject, version)` pairs that use schema `id`.
    pub fn versions_of_id(&self, id: u32) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema_by_id(id)?;
        let state = self.state.lock().expect("registry lock");
        Ok(state
            .subjects
            .iter()
            .flat_map(|(name, s)| {
                s.live()
                    .filter(|v| v.1 == id)
                    .map(move |v| (name.clone(), v.0))
            })
            .collect())
    }

    /// Subjects with at least one live version (or any version, with `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        let state = self.state.lock().expect("registry lock");
        state
            .subjects
            .iter()
            .filter(|(_, s)| {
                if deleted {
                    !s.versions.is_empty()
                } else {
                    s.live().next().is_some()
                }
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Live version numbers of a subject.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let state = self.state.lock().expect("registry lock");
        Ok(state.subject(subject)?.live().map(|v| v.0).collect())
    }

    /// One version of a subject.
    pub fn version(
        &self,
        subject: &str,
        v: VersionRef,
    ) -> Result<RegisteredVersion, RegistryError> {
        self.state
            .lock()
            .expect("registry lock")
            .version(subject, v)
    }

    /// Whether `schema` could be registered under `subject` against `against` (or all).
    pub fn check(
        &self,
        subject: &str,
        schema: &str,
        against: Option<VersionRef>,
    ) -> Result<Vec<String>, RegistryError> {
        let (parsed, _) = parse(schema)?;
        let state = self.state.lock().expect("registry lock");
        let level = state
            .subjects
            .get(subject)
            .and_then(|s| s.level)
            .unwrap_or(state.global_level);
        let previous: Vec<Schema> = match (state.subject(subject), against) {
            // Nothing registered yet: anything is compatible.
            (Err(_), None | Some(VersionRef::Latest)) => vec![],
            (Err(e), Some(VersionRef::Number(_))) => return Err(e),
            (Ok(s), None) => s
                .live()
                .map(|v| state.schemas[v.1 as usize - 1].parsed.clone())
                .collect(),
            (Ok(_), Some(v)) => {
                let found = state.version(subject, v)?;
                vec![state.schemas[found.id as usize - 1].parsed.clone()]
            }
        };
        // Against one named version the check is never transitive.
        let level = match (against, level) {
            (Some(_), CompatibilityLevel::BackwardTransitive) => CompatibilityLevel::Backward,
            (Some(_), CompatibilityLevel::ForwardTransitive) => CompatibilityLevel::Forward,
            (Some(_), CompatibilityLevel::FullTransitive) => CompatibilityLevel::Full,
            (_, l) => l,
        };
        Ok(level.check(&parsed, &previous))
    }

    /// Deletes one version (soft, or permanent after a soft delete).
    pub fn delete_version(
        &self,
        subject: &str,
        v: VersionRef,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let mut state = self.state.lock().expect("registry lock");
        let version = if permanent {
            let s = state
                .subjects
                .get(subject)
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
            match v {
                VersionRef::Number(n) if s.versions.iter().any(|x| x.0 == n) => n,
                VersionRef::Latest => s
                    .versions
                    .last()
                    .map(|x| x.0)
                    .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?,
                VersionRef::Number(n) => return Err(RegistryError::VersionNotFound(n.to_string())),
            }
        } else {
            state.version(subject, v)?.version
        };
        self.append(
            &mut state,
            LogEntry::DeleteVersion {
                subject: subject.into(),
                version,
                permanent,
            },
        )?;
        Ok(version)
    }

    /// Deletes every version of a subject; returns the versions deleted.
    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let versions: Vec<u32> = {
            let state = self.state.lock().expect("registry lock");
            let s = state
                .subjects
                .get(subject)
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
            if permanent {
                s.versions.iter().map(|v| v.0).collect()
            } else {
                s.live().map(|v| v.0).collect()
            }
        };
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.into()));
        }
        for &v in &versions {
            self.delete_version(subject, VersionRef::Number(v), permanent)?;
        }
        Ok(versions)
    }

    /// The compatibility level of a subject (`None` = global) as configured.
    pub fn config(&self, subject: Option<&str>) -> Result<CompatibilityLevel, RegistryError> {
        let state = self.state.lock().expect("registry lock");
        match subject {
            None => Ok(state.global_level),
            Some(name) => state
                .subjects
                .get(name)
                .and_then(|s| s.level)
                .ok_or_else(|| RegistryError::SubjectConfigNotFound(name.into())),
        }
    }

    /// Sets (or with `None` clears) the compatibility level of a subject or the global one.
    pub fn set_config(
        &self,
        subject: Option<&str>,
        level: Option<CompatibilityLevel>,
    ) -> Result<(), RegistryError> {
        let mut state = self.state.lock().expect("registry lock");
        self.append(
            &mut state,
            LogEntry::SetConfig {
                subject: subject.map(String::from),
                level,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"long","default":0}]}"#;
    const BAD: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;

    #[test]
    fn ids_versions_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let store = SchemaStore::open(dir.path()).unwrap();
        assert_eq!(store.register("s-value", V1).unwrap(), 1);
        // Same schema, different whitespace: same id, no new version.
        assert_eq!(
            store.register("s-value", &V1.replace(',', ", ")).unwrap(),
            1
        );
        assert_eq!(store.register("s-value", V2).unwrap(), 2);
        assert_eq!(store.versions("s-value").unwrap(), vec![1, 2]);
        // The same schema under another subject keeps its global id.
        assert_eq!(store.register("t-value", V1).unwrap(), 1);
        assert_eq!(
            store
                .version("t-value", VersionRef::Latest)
                .unwrap()
                .version,
            1
        );
        let err = store.register("s-value", BAD).unwrap_err();
        assert_eq!(err.codes(), (409, 409));
        assert_eq!(store.lookup("s-value", V2).unwrap().version, 2);
        assert_eq!(
            store.lookup("s-value", BAD).unwrap_err().codes(),
            (404, 40403)
        );
        assert_eq!(
            store.register("x", "{nope").unwrap_err().codes(),
            (422, 42201)
        );
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SchemaStore::open(dir.path()).unwrap();
            store.register("a", V1).unwrap();
            store.register("b", V2).unwrap();
            store
                .set_config(Some("a"), Some(CompatibilityLevel::None))
                .unwrap();
            store.delete_subject("b", false).unwrap();
        }
        let store = SchemaStore::open(dir.path()).unwrap();
        assert_eq!(store.schema_by_id(2).unwrap(), V2);
        assert_eq!(store.subjects(false), vec!["a".to_string()]);
        assert_eq!(store.config(Some("a")).unwrap(), CompatibilityLevel::None);
        // With NONE on `a`, the incompatible schema goes in.
        assert_eq!(store.register("a", BAD).unwrap(), 3);
    }
}
