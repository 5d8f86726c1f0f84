//! Model usage (DESIGN §13): the `usage` object (`prompt_tokens`,
//! `completion_tokens`) and the `model` of OpenAI-compatible answers
//! (ModelArts MaaS, LLM services), read from JSON and event-stream bodies
//! as they stream through. The scanner sees a copy of each chunk after it
//! has gone on: it never holds the body or delays an event. It keeps at
//! most one event (SSE) or one bounded copy (JSON); past its window it
//! stops looking, and a body of any other type costs nothing.

pub mod stream_options;

/// The largest JSON answer whose usage is read (a chat completion is a few
/// KiB; an embedding answer can be larger and still carries `usage` last).
pub const JSON_WINDOW: usize = 256 * 1024;

/// The largest server-sent event looked into (the final event with
/// `usage` is small; a longer one is a content chunk).
pub const EVENT_WINDOW: usize = 64 * 1024;

/// The longest model name kept as a metric label.
const MAX_MODEL_LEN: usize = 64;

/// What an answer said about its use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub model: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Reads usage from an answer's body as it streams.
#[derive(Debug)]
pub enum Scanner {
    /// `application/json`: a bounded copy, parsed at the end.
    Json { copy: Vec<u8>, over: bool },
    /// `text/event-stream`: the current event, each `data:` parsed when it ends.
    Events {
        event: Vec<u8>,
        over: bool,
        found: Usage,
        seen: bool,
    },
}

impl Scanner {
    /// A scanner for an answer of `content_type`, or `None` (nothing to read).
    pub fn for_content_type(content_type: Option<&str>) -> Option<Scanner> {
        let ct = content_type?.trim().to_ascii_lowercase();
        if ct.starts_with("application/json") {
            Some(Scanner::Json {
                copy: Vec::new(),
                over: false,
            })
        } else if ct.starts_with("text/event-stream") {
            Some(Scanner::Events {
                event: Vec::new(),
                over: false,
                found: Usage::default(),
                seen: false,
            })
        } else {
            None
        }
    }

    /// A chunk of the body, as it went on to the client.
    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Scanner::Json { copy, over } => {
                if *over {
                    return;
                }
                if copy.len() + chunk.len() > JSON_WINDOW {
                    *over = true;
                    *copy = Vec::new();
                } else {
                    copy.extend_from_slice(chunk);
                }
            }
            Scanner::Events {
                event,
                over,
                found,
                seen,
            } => {
                for line in chunk.split_inclusive(|&b| b == b'\n') {
                    let complete = line.ends_with(b"\n");
                    if !*over {
                        if event.len() + line.len() > EVENT_WINDOW {
                            *over = true;
                            event.clear();
                        } else {
                            event.extend_from_slice(line);
                        }
                    }
                    if complete {
                        // A line ended: a `data:` line is judged whole.
                        if !*over && let Some(u) = data_usage(event) {
                            merge(found, u);
                            *seen = true;
                        }
                        event.clear();
                        *over = false;
                    }
                }
            }
        }
    }

    /// The body ended: what it said, if anything.
    pub fn finish(self) -> Option<Usage> {
        match self {
            Scanner::Json { copy, over } => (!over).then(|| parse(&copy)).flatten(),
            Scanner::Events {
                event,
                over,
                mut found,
                mut seen,
            } => {
                if !over && let Some(u) = data_usage(&event) {
                    merge(&mut found, u);
                    seen = true;
                }
                seen.then_some(found)
            }
        }
    }
}

/// The usage in one SSE line, if it is a `data:` line carrying one.
fn data_usage(line: &[u8]) -> Option<Usage> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    // Most events are content; only one with "usage" is parsed.
    if !contains(data, b"\"usage\"") {
        return None;
    }
    parse(data)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The usage of one JSON object (`{"model":…,"usage":{…}}`).
fn parse(json: &[u8]) -> Option<Usage> {
    if !contains(json, b"\"usage\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(trim(json)).ok()?;
    let usage = v.get("usage")?;
    let n = |k: &str| {
        usage
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Some(Usage {
        model: v
            .get("model")
            .and_then(|m| m.as_str())
            .filter(|m| !m.is_empty())
            .map(|m| m.chars().take(MAX_MODEL_LEN).collect()),
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// A stream's usage is in its last event that has one (some services send
/// running totals); its model in any.
fn merge(into: &mut Usage, u: Usage) {
    if u.model.is_some() {
        into.model = u.model;
    }
    if u.prompt_tokens > 0 || u.completion_tokens > 0 {
        into.prompt_tokens = u.prompt_tokens;
        into.completion_tokens = u.completion_tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSE: &str = "data: {\"id\":\"1\",\"model\":\"qwen3-32b\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n\
data: {\"id\":\"1\",\"model\":\"qwen3-32b\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"id\":\"1\",\"model\":\"qwen3-32b\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n\
data: [DONE]\n\n";

    fn scan(ct: &str, chunks: &[&[u8]]) -> Option<Usage> {
        let mut s = Scanner::for_content_type(Some(ct))?;
        for c in chunks {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn a_json_answer_and_an_event_stream_give_their_usage() {
        let json = br#"{"id":"x","model":"deepseek-v3","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#;
        let want = |m: &str, p, c| Usage {
            model: Some(m.into()),
            prompt_tokens: p,
            completion_tokens: c,
        };
        assert_eq!(
            scan("application/json; charset=utf-8", &[json]),
            Some(want("deepseek-v3", 5, 7))
        );
        assert_eq!(
            scan("text/event-stream", &[SSE.as_bytes()]),
            Some(want("qwen3-32b", 12, 34))
        );
    }

    #[test]
    fn other_bodies_and_bodies_past_the_window_cost_nothing() {
        assert!(Scanner::for_content_type(Some("image/png")).is_none());
        assert!(Scanner::for_content_type(None).is_none());
        let big = vec![b' '; JSON_WINDOW + 1];
        let mut s = Scanner::for_content_type(Some("application/json")).unwrap();
        s.feed(&big);
        assert!(matches!(&s, Scanner::Json { copy, over: true } if copy.capacity() == 0));
        assert_eq!(s.finish(), None);
    }

    proptest::proptest! {
        /// However the stream is cut into chunks, the same usage comes out.
        #[test]
        fn event_streams_split_anywhere_give_the_same_usage(cuts in proptest::collection::vec(0usize..SSE.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort();
            let bytes = SSE.as_bytes();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c.max(at)]);
                at = c.max(at);
            }
            chunks.push(&bytes[at..]);
            let got = scan("text/event-stream", &chunks).unwrap();
            proptest::prop_assert_eq!(got.prompt_tokens, 12);
            proptest::prop_assert_eq!(got.completion_tokens, 34);
            proptest::prop_assert_eq!(got.model.as_deref(), Some("qwen3-32b"));
        }
    }
}
