//! Chat's `reasoning_content` beside `content` (vLLM's and DeepSeek's shape): the released text of a reply,
//! split at its reasoning markers, the markers themselves in neither field. The whole reply and its
//! stream go through the same [`Split`], so the streamed fields add up to the unstreamed ones.

use crate::pipeline::settings::Reasoning;

/// Splits released text, piece by piece, into reasoning and content.
#[derive(Debug, Clone)]
pub struct Split {
    open: String,
    close: String,
    inside: bool,
    /// The end of the text so far that may begin the marker the split is waiting for: held until the
    /// next piece says whether it is one.
    held: String,
}

impl Split {
    /// A split at `r`'s markers, starting inside the reasoning when the prompt opened it.
    pub fn new(r: &Reasoning, starts_inside: bool) -> Self {
        Self {
            open: r.open.clone(),
            close: r.close.clone(),
            inside: starts_inside,
            held: String::new(),
        }
    }

    /// Takes the next released text; returns the reasoning and the content it completes.
    pub fn push(&mut self, text: &str) -> (String, String) {
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);
        let (mut reasoning, mut content) = (String::new(), String::new());
        loop {
            let marker = if self.inside { &self.close } else { &self.open };
            let out = if self.inside {
                &mut reasoning
            } else {
                &mut content
            };
            match buf.find(marker.as_str()) {
                Some(at) => {
                    out.push_str(&buf[..at]);
                    buf.drain(..at + marker.len());
                    self.inside = !self.inside;
                }
                None => {
                    // Keep back the longest tail that begins the marker.
                    let keep = (1..marker.len())
                        .rev()
                        .find(|&k| {
                            k <= buf.len()
                                && buf.is_char_boundary(buf.len() - k)
                                && marker.starts_with(&buf[buf.len() - k..])
                        })
                        .unwrap_or(0);
                    out.push_str(&buf[..buf.len() - keep]);
                    self.held = buf[buf.len() - keep..].to_string();
                    return (reasoning, content);
                }
            }
        }
    }

    /// The end of the reply: what was held back was not a marker.
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        if self.inside {
            (held, String::new())
        } else {
            (String::new(), held)
        }
    }

    /// A whole reply's reasoning and content.
    pub fn whole(mut self, text: &str) -> (String, String) {
        let (mut r, mut c) = self.push(text);
        let (r2, c2) = self.finish();
        r.push_str(&r2);
        c.push_str(&c2);
        (r, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> Split {
        Split::new(&Reasoning::new("<think>", "</think>").unwrap(), false)
    }

    #[test]
    fn pieces_add_up_to_the_whole_and_markers_go_nowhere() {
        let text = "<think>plan\n\nmore</think>The answer.";
        let whole = split().whole(text);
        assert_eq!(whole, ("plan\n\nmore".into(), "The answer.".into()));
        // Every way of cutting the text into two or three pieces gives the same fields.
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut s = split();
                let mut r = String::new();
                let mut c = String::new();
                for piece in [&text[..a], &text[a..b], &text[b..]] {
                    let (x, y) = s.push(piece);
                    r.push_str(&x);
                    c.push_str(&y);
                }
                let (x, y) = s.finish();
                r.push_str(&x);
                c.push_str(&y);
                assert_eq!((r, c), whole, "cut at {a} and {b}");
            }
        }
    }

    #[test]
    fn a_prompt_that_opened_the_reasoning_starts_inside() {
        let s = Split::new(&Reasoning::new("<think>", "</think>").unwrap(), true);
        assert_eq!(
            s.whole("plan</think>Answer"),
            ("plan".into(), "Answer".into())
        );
        // A reply that never closes it is all reasoning; one with no markers all content.
        let s = Split::new(&Reasoning::new("<think>", "</think>").unwrap(), true);
        assert_eq!(s.whole("plan <thi"), ("plan <thi".into(), String::new()));
        assert_eq!(
            split().whole("just </think> text"),
            (String::new(), "just </think> text".into())
        );
    }
}
