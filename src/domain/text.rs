//! Which characters a reader cannot see.
//!
//! Names and addresses are compared and shown by people: a character that
//! renders as nothing (a zero-width space, a byte-order mark, a Hangul
//! filler) makes two values that look equal differ, or a name that looks
//! empty pass as filled in. The table below is what the domain types
//! reject; it is small and fixed, so it lives here instead of in a Unicode
//! database crate.

/// Unicode general category Cf (format characters), every
/// Default_Ignorable_Code_Point, and U+2800 BRAILLE PATTERN BLANK, which
/// renders as an empty cell. Sorted, non-overlapping, inclusive ranges
/// (Unicode 16).
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{0600}', '\u{0605}'),   // Arabic number signs
    ('\u{061C}', '\u{061C}'),   // Arabic letter mark
    ('\u{06DD}', '\u{06DD}'),   // Arabic end of ayah
    ('\u{070F}', '\u{070F}'),   // Syriac abbreviation mark
    ('\u{0890}', '\u{0891}'),   // Arabic pound and piastre marks above
    ('\u{08E2}', '\u{08E2}'),   // Arabic disputed end of ayah
    ('\u{115F}', '\u{1160}'),   // Hangul choseong and jungseong fillers
    ('\u{17B4}', '\u{17B5}'),   // Khmer inherent vowels
    ('\u{180B}', '\u{180F}'),   // Mongolian variation selectors and vowel separator
    ('\u{200B}', '\u{200F}'),   // zero-width space, (non-)joiner, direction marks
    ('\u{202A}', '\u{202E}'),   // bidirectional embeddings and overrides
    ('\u{2060}', '\u{206F}'),   // word joiner, invisible operators, bidi isolates
    ('\u{2800}', '\u{2800}'),   // braille pattern blank
    ('\u{3164}', '\u{3164}'),   // Hangul filler
    ('\u{FE00}', '\u{FE0F}'),   // variation selectors
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (byte-order mark)
    ('\u{FFA0}', '\u{FFA0}'),   // halfwidth Hangul filler
    ('\u{FFF0}', '\u{FFFB}'),   // unassigned ignorables, interlinear annotation
    ('\u{110BD}', '\u{110BD}'), // Kaithi number sign
    ('\u{110CD}', '\u{110CD}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343F}'), // Egyptian hieroglyph format controls
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol format controls
    ('\u{E0000}', '\u{E0FFF}'), // tags and variation selectors supplement
];

/// A character that renders as nothing on its own (see [`INVISIBLE`]).
pub(crate) fn is_invisible(c: char) -> bool {
    INVISIBLE
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// A character that leaves a mark: not whitespace, not a control, not
/// invisible.
pub(crate) fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !is_invisible(c)
}

/// Zero-width non-joiner and joiner: invisible, yet part of correct
/// spelling in Persian, the Indic scripts and emoji sequences, where they
/// stand between two visible characters.
pub(crate) fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}

/// Variation selectors: they choose how the visible character before them
/// is drawn (an emoji's colour form, an ideograph variant).
pub(crate) fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// The first invisible character of `text` that does not shape a visible
/// neighbour: a joiner must stand between two visible characters (a
/// variation selector may come before it), a variation selector must
/// follow a visible character; any other invisible character is refused.
pub(crate) fn stray_invisible(text: &str) -> Option<char> {
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().find_map(|(i, &c)| {
        if !is_invisible(c) {
            return None;
        }
        let before = i.checked_sub(1).map(|j| chars[j]);
        let after = chars.get(i + 1).copied();
        let shapes_a_neighbour = if is_joiner(c) {
            before.is_some_and(|b| is_visible(b) || is_variation_selector(b))
                && after.is_some_and(is_visible)
        } else if is_variation_selector(c) {
            before.is_some_and(is_visible)
        } else {
            false
        };
        (!shapes_a_neighbour).then_some(c)
    })
}

/// Whitespace as `char::is_whitespace` sees it, outside the controls.
const SPACES: &str = r"\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// C0 and C1 controls, as `char::is_control` sees them.
const CONTROLS: &str = r"\u0000-\u001F\u007F-\u009F";

/// The name rule as a regular expression, for the OpenAPI document: at
/// least one visible character, no control or invisible ones. It lists
/// only the Basic Multilingual Plane (`\uXXXX` is what ECMA-262, Python and
/// Rust regular expressions agree on), and leaves out the joiners a name
/// may hold between two letters: what it matches, [`PersonName`] accepts.
///
/// [`PersonName`]: super::PersonName
pub(crate) fn name_pattern() -> String {
    let invisible: String = INVISIBLE
        .iter()
        .filter(|(_, last)| u32::from(*last) <= 0xFFFF)
        .map(|&(first, last)| {
            if first == last {
                format!(r"\u{:04X}", u32::from(first))
            } else {
                format!(r"\u{:04X}-\u{:04X}", u32::from(first), u32::from(last))
            }
        })
        .collect();
    let allowed = format!("[^{CONTROLS}{invisible}]");
    let visible = format!("[^{CONTROLS}{invisible}{SPACES}]");
    format!("^{allowed}*{visible}{allowed}*$")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code points a `\uXXXX` / `\uXXXX-\uYYYY` list names.
    fn listed(class: &str) -> Vec<u32> {
        let hex = |h: &str| u32::from_str_radix(h, 16).unwrap();
        let mut points = Vec::new();
        let mut rest = class;
        while let Some(item) = rest.strip_prefix(r"\u") {
            let first = hex(&item[..4]);
            rest = &item[4..];
            let last = match rest.strip_prefix(r"-\u") {
                Some(range) => {
                    rest = &range[4..];
                    hex(&range[..4])
                }
                None => first,
            };
            points.extend(first..=last);
        }
        assert!(rest.is_empty(), "unparsed: {rest}");
        points
    }

    #[test]
    fn the_documented_pattern_lists_what_the_predicates_refuse() {
        let bmp = || (0..=0xFFFF_u32).filter_map(char::from_u32);
        let spaces: Vec<u32> = bmp()
            .filter(|c| c.is_whitespace() && !c.is_control())
            .map(u32::from)
            .collect();
        assert_eq!(listed(SPACES), spaces);
        let controls: Vec<u32> = bmp().filter(|c| c.is_control()).map(u32::from).collect();
        assert_eq!(listed(CONTROLS), controls);
        let pattern = name_pattern();
        let invisible: Vec<u32> = bmp().filter(|&c| is_invisible(c)).map(u32::from).collect();
        let allowed = &pattern[3..pattern.find(']').unwrap()];
        assert_eq!(listed(allowed), [controls, invisible].concat());
    }

    #[test]
    fn the_table_is_sorted_without_overlaps() {
        assert!(INVISIBLE.iter().all(|(first, last)| first <= last));
        assert!(INVISIBLE.windows(2).all(|pair| pair[0].1 < pair[1].0));
    }

    #[test]
    fn zero_width_fillers_and_marks_are_invisible() {
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{3164}',
            '\u{115F}',
            '\u{FFA0}',
            '\u{00AD}',
            '\u{202E}',
            '\u{2800}',
            '\u{E0001}',
            '\u{FE0F}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
            assert!(!is_visible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'Z', 'é', 'ß', 'س', '한', '👩', '-', '.'] {
            assert!(!is_invisible(c), "{c}");
            assert!(is_visible(c), "{c}");
        }
        assert!(!is_visible(' ') && !is_visible('\u{3000}') && !is_visible('\0'));
    }

    #[test]
    fn joiners_and_variation_selectors_pass_only_beside_what_they_shape() {
        // Persian "Mehrasa" is spelled with a zero-width non-joiner.
        assert_eq!(stray_invisible("مهر\u{200C}آسا"), None);
        // Family emoji: joiners between the people, a colour selector.
        assert_eq!(stray_invisible("👨\u{200D}👩\u{200D}👧"), None);
        assert_eq!(stray_invisible("❤\u{FE0F}\u{200D}🔥"), None);
        assert_eq!(stray_invisible("\u{200C}a"), Some('\u{200C}'));
        assert_eq!(stray_invisible("a\u{200D}"), Some('\u{200D}'));
        assert_eq!(stray_invisible("a \u{200D}b"), Some('\u{200D}'));
        assert_eq!(stray_invisible("\u{FE0F}a"), Some('\u{FE0F}'));
        assert_eq!(stray_invisible("An\u{200B}n"), Some('\u{200B}'));
        assert_eq!(stray_invisible("Ann\u{FEFF}"), Some('\u{FEFF}'));
        assert_eq!(stray_invisible("A\u{3164}"), Some('\u{3164}'));
    }
}
