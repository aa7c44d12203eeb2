//! `fastrelay run --config FILE`: the options of `run` in a TOML file.
//!
//! The accepted keys are not listed here: they are the long names of the
//! flags clap's own definition of `run` has (`RunArgs`, the flattened
//! limits, and whatever flag is added later), so a new flag works in the
//! file as soon as it exists. Each key/value becomes a `--key=value` token
//! placed before the real command-line arguments, and clap parses the
//! whole with its own value parsers and checks. A flag also given on the
//! command line drops the file's value (and the file's values of flags
//! that conflict with it), so the command line always wins.
//!
//! Every error says where: `FILE:LINE: key `X`: reason`.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    path::{Path, PathBuf},
};

use clap::{
    builder::ValueParser,
    error::{ContextKind, ContextValue, ErrorKind},
    parser::ValueSource,
    Arg, ArgAction, CommandFactory, FromArgMatches,
};
use toml::de::{DeTable, DeValue};

use crate::Cli;

/// The flag that names the file; it cannot be set from the file itself.
const CONFIG_ID: &str = "config";
/// Largest config file read: far beyond any real one, small enough that a
/// wrong path (a log, a device) fails fast instead of filling memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the command line (with its config file) was not accepted.
#[derive(Debug)]
pub enum ParseError {
    /// Nothing to do with the file: clap reports it (usage, help, version).
    Clap(clap::Error),
    /// A problem in the file, or one clap found in a value from it: the
    /// message names the file, and the line and key where there is one.
    File(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Clap(e) => write!(f, "{}", clap_reason(e)),
            ParseError::File(m) => f.write_str(m),
        }
    }
}

/// One option that came from the file.
#[derive(Debug, Clone)]
pub struct Placed {
    /// clap's id of the argument (`max_object_size`).
    pub id: String,
    /// The key as written (`max-object-size`).
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// Where the options of a `run` came from: which keys of which file.
#[derive(Debug, Clone)]
pub struct Origin {
    pub path: PathBuf,
    /// The file's options that were used (not overridden by the command line).
    pub placed: Vec<Placed>,
    /// Keys the command line overrode.
    pub overridden: Vec<String>,
}

impl Origin {
    /// `FILE:LINE: key `X`: reason` for an error that names flags
    /// (`--max-object-size ...`), placed at the first named flag that came
    /// from the file; `FILE: reason` when none did.
    pub fn locate(&self, err: &anyhow::Error) -> String {
        let message = format!("{err:#}");
        let file_key =
            flags_named(&message).find_map(|flag| self.placed.iter().find(|p| p.key == flag));
        match file_key {
            Some(p) => format!(
                "{}:{}: key `{}`: {message}",
                self.path.display(),
                p.line,
                p.key
            ),
            None => format!("{}: {message}", self.path.display()),
        }
    }

    fn find_id(&self, id: &str) -> Option<&Placed> {
        self.placed.iter().find(|p| p.id == id)
    }
}

/// The `--long-name` words of a message, in order.
fn flags_named(message: &str) -> impl Iterator<Item = &str> {
    message.match_indices("--").filter_map(move |(at, _)| {
        let rest = &message[at + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        // `---x` or a bare `--` is no flag.
        (!name.is_empty() && !name.starts_with('-')).then_some(name)
    })
}

/// Parses the process's arguments. With `run --config FILE`, the file's
/// options are placed before the command-line ones; otherwise this is
/// clap's plain parse.
pub fn parse(argv: Vec<OsString>) -> Result<(Cli, Option<Origin>), ParseError> {
    let (mut matches, origin) = expand(Cli::command(), argv)?;
    let cli = Cli::from_arg_matches_mut(&mut matches).map_err(ParseError::Clap)?;
    Ok((cli, origin))
}

/// The matches of `root` for `argv`, with the file of `run --config` in.
fn expand(
    mut root: clap::Command,
    argv: Vec<OsString>,
) -> Result<(clap::ArgMatches, Option<Origin>), ParseError> {
    root.build();
    let plain = |root: clap::Command, argv: Vec<OsString>| {
        root.try_get_matches_from(argv)
            .map(|m| (m, None))
            .map_err(ParseError::Clap)
    };
    if argv.get(1).map(OsString::as_os_str) != Some(OsStr::new("run")) {
        return plain(root, argv);
    }
    let run = root
        .find_subcommand("run")
        .expect("the CLI has a run subcommand")
        .clone();
    // A first, forgiving pass only finds out what the command line itself
    // sets (the file may supply required flags, so validation is off).
    let given = match run
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv[1..])
    {
        Ok(m) => m,
        // --help and the like: clap answers them.
        Err(_) => return plain(root, argv),
    };
    let Some(path) = given.get_one::<PathBuf>(CONFIG_ID).cloned() else {
        return plain(root, argv);
    };
    let on_cli: Vec<&Arg> = run
        .get_arguments()
        .filter(|a| {
            given.ids().any(|id| id == a.get_id())
                && given.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
        })
        .collect();

    let entries = load(&path, &run)?;
    let mut tokens = Vec::new();
    let mut origin = Origin {
        path: path.clone(),
        placed: Vec::new(),
        overridden: Vec::new(),
    };
    for entry in entries {
        let arg = entry.arg(&run);
        // A list from the file is replaced, not extended, by the command
        // line's; a flag that conflicts with one given there goes too.
        let overridden = on_cli.iter().any(|c| {
            c.get_id() == arg.get_id() || conflicting(&run, c, arg) || conflicting(&run, arg, c)
        });
        if overridden {
            origin.overridden.push(entry.key);
            continue;
        }
        tokens.extend(entry.tokens);
        origin.placed.push(Placed {
            id: arg.get_id().to_string(),
            key: entry.key,
            line: entry.line,
        });
    }

    let mut full = vec![argv[0].clone(), argv[1].clone()];
    full.extend(tokens);
    full.extend(argv[2..].iter().cloned());
    match root.try_get_matches_from(full) {
        Ok(m) => Ok((m, Some(origin))),
        Err(e) => Err(place_clap_error(e, &origin, &run)),
    }
}

fn conflicting(cmd: &clap::Command, a: &Arg, b: &Arg) -> bool {
    cmd.get_arg_conflicts_with(a)
        .iter()
        .any(|c| c.get_id() == b.get_id())
}

/// clap's message without its `error:` prefix, usage and help hint, on
/// one line.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let text = text.trim_start().trim_start_matches("error:");
    let end = ["\nUsage:", "\nFor more information"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Maps an error clap found in the combined arguments to the file's key
/// when the offending flag came from the file.
fn place_clap_error(e: clap::Error, origin: &Origin, run: &clap::Command) -> ParseError {
    let path = origin.path.display();
    let reason = clap_reason(&e);
    if e.kind() == ErrorKind::MissingRequiredArgument {
        let missing: Vec<String> = context_flags(&e, ContextKind::InvalidArg)
            .into_iter()
            .map(|f| format!("`{f}`"))
            .collect();
        return ParseError::File(format!(
            "{path}: key {}: required, set neither in the file nor on the command line",
            missing.join(", ")
        ));
    }
    // The flag clap tripped over first, then the one it conflicts with.
    let placed = [ContextKind::InvalidArg, ContextKind::PriorArg]
        .into_iter()
        .flat_map(|kind| context_flags(&e, kind))
        .filter_map(|flag| {
            let arg = run.get_arguments().find(|a| a.get_long() == Some(&flag))?;
            origin.find_id(arg.get_id().as_str())
        })
        .next();
    match placed {
        Some(p) => ParseError::File(format!("{path}:{}: key `{}`: {reason}", p.line, p.key)),
        None => ParseError::Clap(e),
    }
}

/// The long names (`cert` of `--cert <CERT>`) in one context of a clap error.
fn context_flags(e: &clap::Error, kind: ContextKind) -> Vec<String> {
    let values: Vec<&str> = match e.get(kind) {
        Some(ContextValue::String(s)) => vec![s.as_str()],
        Some(ContextValue::Strings(v)) => v.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    values
        .into_iter()
        .filter_map(|v| flags_named(v).next().map(str::to_owned))
        .collect()
}

/// One key of the file, turned into command-line tokens.
#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
    /// Index of the argument in `run.get_arguments()`.
    arg: usize,
    tokens: Vec<OsString>,
}

impl Entry {
    fn arg<'c>(&self, run: &'c clap::Command) -> &'c Arg {
        run.get_arguments()
            .nth(self.arg)
            .expect("index from the same command")
    }
}

/// Reads and checks the file: TOML syntax, known keys, value types.
fn load(path: &Path, run: &clap::Command) -> Result<Vec<Entry>, ParseError> {
    let shown = path.display();
    let fail = |m: String| ParseError::File(m);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("{shown}: cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "{shown}: {} bytes; a config file may have at most {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("{shown}: cannot read: {e}")))?;
    entries(&text, run).map_err(|e| fail(format!("{shown}:{e}")))
}

/// A problem at a place in the file: `LINE: key `X`: reason` or
/// `LINE:COL: reason`, printed after `FILE:`.
#[derive(Debug)]
struct FileError(String);

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file's keys as tokens for `run`, in the order they appear.
fn entries(text: &str, run: &clap::Command) -> Result<Vec<Entry>, FileError> {
    let table = DeTable::parse(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let (line, col) = line_col(text, at);
        FileError(format!("{line}:{col}: invalid TOML: {}", e.message()))
    })?;
    let mut pairs: Vec<_> = table.get_ref().iter().collect();
    pairs.sort_by_key(|(k, _)| k.span().start);
    let keys: Vec<(usize, &Arg)> = run
        .get_arguments()
        .enumerate()
        .filter(|(_, a)| a.get_long().is_some() && is_option(a))
        .collect();
    let mut out = Vec::new();
    for (key, value) in pairs {
        let name: &str = key.get_ref();
        let line = line_col(text, key.span().start).0;
        let at = |reason: String| FileError(format!("{line}: key `{name}`: {reason}"));
        if name == CONFIG_ID {
            return Err(at(
                "a config file cannot name another one; `config` is for the command line"
                    .to_owned(),
            ));
        }
        let Some(&(index, arg)) = keys.iter().find(|(_, a)| a.get_long() == Some(name)) else {
            let longs = keys.iter().filter_map(|(_, a)| a.get_long());
            let hint = suggest(name, longs)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(at(format!("unknown key{hint}")));
        };
        let tokens = tokens(name, arg, value.get_ref()).map_err(at)?;
        out.push(Entry {
            key: name.to_owned(),
            line,
            arg: index,
            tokens,
        });
    }
    Ok(out)
}

/// Whether an argument can be a key: a flag or option, not help/version.
fn is_option(a: &Arg) -> bool {
    !matches!(
        a.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    ) && a.get_id() != CONFIG_ID
}

/// The closest key to a misspelt one, if any is close.
fn suggest<'a>(name: &str, keys: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    keys.map(|k| (strsim::damerau_levenshtein(&wanted, k), k))
        .filter(|&(d, k)| d <= (k.len() / 4).max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// The command-line tokens of one key, or why its value has the wrong type.
fn tokens(key: &str, arg: &Arg, value: &DeValue<'_>) -> Result<Vec<OsString>, String> {
    let flag = || OsString::from(format!("--{key}"));
    let with = |v: String| OsString::from(format!("--{key}={v}"));
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let Some(on) = value.as_bool() else {
                return Err(format!("expected true or false, found {}", describe(value)));
            };
            // Only the non-default state is a flag on the command line.
            let set = on == matches!(arg.get_action(), ArgAction::SetTrue);
            Ok(if set { vec![flag()] } else { Vec::new() })
        }
        ArgAction::Count => {
            let n = value
                .as_integer()
                .and_then(|i| u8::from_str_radix(i.as_str(), i.radix()).ok())
                .ok_or_else(|| format!("expected a count (0-255), found {}", describe(value)))?;
            Ok(vec![flag(); n as usize])
        }
        ArgAction::Append => match value.as_array() {
            Some(items) => items
                .iter()
                .map(|v| scalar(arg, v.get_ref()).map(with))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("in the list: {e}")),
            None => scalar(arg, value).map(|v| vec![with(v)]),
        },
        _ => scalar(arg, value).map(|v| vec![with(v)]),
    }
}

/// The text of a single value, as it would be written on the command line.
fn scalar(arg: &Arg, value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|_| format!("integer {} is out of range", i.as_str())),
        DeValue::Float(f) => Ok(f.as_str().replace('_', "")),
        DeValue::Boolean(b) if takes_bool(arg) => Ok(b.to_string()),
        other => {
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            Err(format!(
                "expected {}, found {}",
                if repeatable {
                    "a value or a list of values"
                } else {
                    "a single value (string or number)"
                },
                describe(other)
            ))
        }
    }
}

/// Whether a value-taking argument parses booleans (`--x true`).
fn takes_bool(arg: &Arg) -> bool {
    let parser: &ValueParser = arg.get_value_parser();
    parser.type_id() == ValueParser::bool().type_id()
}

fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table (options are top-level keys)".to_owned(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_command() -> clap::Command {
        let mut cli = Cli::command();
        cli.build();
        cli.find_subcommand("run").unwrap().clone()
    }

    fn run_entries(text: &str) -> Result<Vec<(String, usize, Vec<String>)>, String> {
        entries(text, &run_command())
            .map(|v| {
                v.into_iter()
                    .map(|e| {
                        let t = e.tokens.iter().map(|t| t.to_string_lossy().into_owned());
                        (e.key, e.line, t.collect())
                    })
                    .collect()
            })
            .map_err(|e| e.0)
    }

    #[test]
    fn keys_become_long_flags_in_file_order() {
        let got = run_entries(
            "port = 5000\n# note\nself-signed = true\nxdp-copy = false\nmax-object-size = \"4M\"\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("port".into(), 1, vec!["--port=5000".into()]),
                ("self-signed".into(), 3, vec!["--self-signed".into()]),
                ("xdp-copy".into(), 4, vec![]),
                (
                    "max-object-size".into(),
                    5,
                    vec!["--max-object-size=4M".into()]
                ),
            ]
        );
    }

    #[test]
    fn misspelt_and_misplaced_keys_are_named() {
        let e = run_entries("\n\nmax-objekt-size = 1\n").unwrap_err();
        assert!(
            e.starts_with("3: key `max-objekt-size`: unknown key"),
            "{e}"
        );
        assert!(e.contains("did you mean `max-object-size`"), "{e}");
        let e = run_entries("max_backlog_bytes = 1\n").unwrap_err();
        assert!(e.contains("did you mean `max-backlog-bytes`"), "{e}");
        let e = run_entries("zzzz = 1\n").unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
        let e = run_entries("config = \"x.toml\"\n").unwrap_err();
        assert!(e.starts_with("1: key `config`"), "{e}");
        let e = run_entries("[limits]\nmax-tracks = 3\n").unwrap_err();
        assert!(e.contains("key `limits`"), "{e}");
    }

    #[test]
    fn wrong_types_are_refused() {
        let e = run_entries("port = 1\nself-signed = \"yes\"\n").unwrap_err();
        assert!(
            e.starts_with("2: key `self-signed`: expected true or false"),
            "{e}"
        );
        let e = run_entries("port = true\n").unwrap_err();
        assert!(e.contains("expected a single value"), "{e}");
        let e = run_entries("port = [1, 2]\n").unwrap_err();
        assert!(e.contains("found a list"), "{e}");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = run_entries("port = 1\niface = \"lo\n").unwrap_err();
        assert!(e.starts_with("2:"), "{e}");
        assert!(e.contains("invalid TOML"), "{e}");
        let e = run_entries("port = 1\nport = 2\n").unwrap_err();
        assert!(e.starts_with("2:"), "{e}");
    }

    /// Flags `run` does not have yet work from their clap definition
    /// alone: a repeatable one takes a list, a counted one a number.
    #[test]
    fn keys_follow_the_clap_definition() {
        let cmd = clap::Command::new("run")
            .arg(
                Arg::new("upstream")
                    .long("upstream")
                    .action(ArgAction::Append),
            )
            .arg(Arg::new("verbose").long("verbose").action(ArgAction::Count))
            .arg(
                Arg::new("strict")
                    .long("strict")
                    .value_parser(ValueParser::bool()),
            );
        let text = "upstream = [\"moqt://a:1\", \"moqt://b:2\"]\nverbose = 2\nstrict = false\n";
        let got: Vec<Vec<String>> = entries(text, &cmd)
            .unwrap()
            .into_iter()
            .map(|e| {
                e.tokens
                    .iter()
                    .map(|t| t.to_string_lossy().into_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            got,
            [
                vec!["--upstream=moqt://a:1", "--upstream=moqt://b:2"],
                vec!["--verbose", "--verbose"],
                vec!["--strict=false"],
            ]
        );
        let one = entries("upstream = \"moqt://a:1\"\n", &cmd).unwrap();
        assert_eq!(one[0].tokens, [OsString::from("--upstream=moqt://a:1")]);
        let e = entries("upstream = [1, [2]]\n", &cmd).unwrap_err().0;
        assert!(
            e.contains("in the list: expected a value or a list of values, found a list"),
            "{e}"
        );
        let e = entries("verbose = \"lots\"\n", &cmd).unwrap_err().0;
        assert!(e.contains("expected a count"), "{e}");
    }

    /// A `run` with a required flag, a list and a conflict, like the
    /// real one will have.
    fn toy() -> clap::Command {
        let path = clap::value_parser!(PathBuf);
        clap::Command::new("toy").subcommand(
            clap::Command::new("run")
                .arg(Arg::new("config").long("config").value_parser(path))
                .arg(Arg::new("iface").long("iface").required(true))
                .arg(
                    Arg::new("port")
                        .long("port")
                        .value_parser(clap::value_parser!(u16))
                        .default_value("4433"),
                )
                .arg(
                    Arg::new("upstream")
                        .long("upstream")
                        .action(ArgAction::Append),
                )
                .arg(Arg::new("cert").long("cert").conflicts_with("self_signed"))
                .arg(
                    Arg::new("self_signed")
                        .long("self-signed")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn toy_run(file: &str, cli: &[&str]) -> Result<(clap::ArgMatches, Origin), String> {
        let path = std::env::temp_dir().join(format!(
            "fastrelay-config-unit-{}-{}.toml",
            std::process::id(),
            cli.len()
        ));
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["toy".into(), "run".into(), "--config".into()];
        argv.push(path.clone().into());
        argv.extend(cli.iter().map(OsString::from));
        let result = expand(toy(), argv);
        std::fs::remove_file(&path).unwrap();
        match result {
            Ok((m, origin)) => Ok((
                m.subcommand_matches("run").unwrap().clone(),
                origin.unwrap(),
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn the_command_line_replaces_values_lists_and_conflicting_flags() {
        let file = "iface = \"lo\"\nport = 1000\nupstream = [\"a\", \"b\"]\ncert = \"x.pem\"\n";
        let strings = |m: &clap::ArgMatches, id: &str| -> Vec<String> {
            m.get_many::<String>(id)
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        };
        let (m, origin) = toy_run(file, &[]).unwrap();
        assert_eq!(m.get_one::<u16>("port"), Some(&1000));
        assert_eq!(strings(&m, "upstream"), ["a", "b"]);
        assert_eq!(strings(&m, "cert"), ["x.pem"]);
        assert!(origin.overridden.is_empty());

        let cli = ["--port", "2000", "--upstream", "c", "--self-signed"];
        let (m, origin) = toy_run(file, &cli).unwrap();
        assert_eq!(m.get_one::<u16>("port"), Some(&2000));
        assert_eq!(strings(&m, "upstream"), ["c"]);
        assert!(m.get_one::<String>("cert").is_none());
        assert!(m.get_flag("self_signed"));
        assert_eq!(strings(&m, "iface"), ["lo"]);
        assert_eq!(origin.overridden, ["port", "upstream", "cert"]);
        assert_eq!(origin.placed.len(), 1);

        // clap's verdict on a value from the file points at its line; on
        // one from the command line it stays clap's own.
        let e = toy_run("iface = \"lo\"\nport = 70000\n", &[]).unwrap_err();
        assert!(e.contains(":2: key `port`: invalid value '70000'"), "{e}");
        let e = toy_run("iface = \"lo\"\n", &["--port", "x"]).unwrap_err();
        assert!(!e.contains("key `port`"), "{e}");
        assert!(e.contains("invalid value 'x'"), "{e}");
    }

    #[test]
    fn flags_are_found_in_messages() {
        let got: Vec<_> =
            flags_named("--cut-through (1) must be at most half of --max-connection-buffer; -- x")
                .collect();
        assert_eq!(got, ["cut-through", "max-connection-buffer"]);
    }
}
