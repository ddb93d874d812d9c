//! ECS's pagination, one way for every list call: `maxResults` (1–100, default 100) and an
//! opaque `nextToken`.
//!
//! A token names the sort key of the last item returned, not an offset, so items added or
//! removed between two pages neither repeat nor skip the items not yet listed. Keys are the list's
//! own sort keys (an ARN, a family name, ...); the token is their hex encoding behind a short
//! marker, opaque to callers, and a token that does not decode is refused by name.

use crate::error::EcsError;

/// The largest and default page size, as in ECS.
pub const MAX_RESULTS: i32 = 100;

const MARKER: &str = "b1.";

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// Checks `maxResults` (1–100; absent = 100).
pub fn page_size(max_results: Option<i32>) -> Result<usize, EcsError> {
    match max_results {
        None => Ok(MAX_RESULTS as usize),
        Some(n) if (1..=MAX_RESULTS).contains(&n) => Ok(n as usize),
        Some(n) => Err(EcsError::invalid(format!(
            "maxResults: {n} must be between 1 and {MAX_RESULTS}"
        ))),
    }
}

fn encode(key: &str) -> String {
    let mut s = String::with_capacity(MARKER.len() + key.len() * 2);
    s.push_str(MARKER);
    for b in key.as_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode(token: &str) -> Result<String, EcsError> {
    let bad = || EcsError::invalid(format!("nextToken: '{token}' is not a valid token"));
    let hex = token.strip_prefix(MARKER).ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Pages `items`, given as `(sort key, item)` in list order (ascending by key, or descending
/// when `descending`): the items after `next_token`'s key, at most `max_results` of them.
pub fn paginate<T>(
    items: impl IntoIterator<Item = (String, T)>,
    descending: bool,
    next_token: Option<&str>,
    max_results: Option<i32>,
) -> Result<Page<T>, EcsError> {
    let size = page_size(max_results)?;
    let after = next_token
        .filter(|t| !t.is_empty())
        .map(decode)
        .transpose()?;
    let mut rest = items.into_iter().filter(|(k, _)| match &after {
        None => true,
        Some(a) if descending => k < a,
        Some(a) => k > a,
    });
    let mut page = Vec::with_capacity(size.min(16));
    let mut last = None;
    for (k, v) in rest.by_ref().take(size) {
        last = Some(k);
        page.push(v);
    }
    let next_token = match (rest.next(), last) {
        (Some(_), Some(k)) => Some(encode(&k)),
        _ => None,
    };
    Ok(Page {
        items: page,
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("k{i:04}"), i)).collect()
    }

    #[test]
    fn pages_return_every_item_once_and_end_without_a_token() {
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let p = paginate(keys(250), false, token.as_deref(), Some(7)).unwrap();
            assert!(p.items.len() <= 7);
            seen.extend(p.items);
            match p.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, (0..250).collect::<Vec<_>>());
        // Exactly a full last page leaves no token behind.
        let p = paginate(keys(100), false, None, None).unwrap();
        assert_eq!((p.items.len(), p.next_token), (100, None));
    }

    #[test]
    fn descending_lists_page_downwards_and_items_removed_meanwhile_skip_nothing() {
        let mut all = keys(10);
        all.reverse();
        let p = paginate(all.clone(), true, None, Some(3)).unwrap();
        assert_eq!(p.items, [9, 8, 7]);
        // The last item of the first page goes away before the second page is asked for.
        all.retain(|(_, v)| *v != 7);
        let p2 = paginate(all, true, p.next_token.as_deref(), Some(3)).unwrap();
        assert_eq!(p2.items, [6, 5, 4]);
    }

    #[test]
    fn bad_sizes_and_tokens_are_refused_by_name() {
        for n in [0, -1, 101] {
            let e = paginate(keys(3), false, None, Some(n)).unwrap_err();
            assert!(e.to_string().contains("maxResults"), "{e}");
        }
        for t in ["garbage", "b1.zz", "b1.abc", "b1.ff"] {
            let e = paginate(keys(3), false, Some(t), None).unwrap_err();
            assert!(e.to_string().contains("nextToken"), "{t}: {e}");
        }
    }
}
