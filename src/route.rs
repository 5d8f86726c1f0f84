//! Route matching and path mapping (DESIGN §6): the longest prefix wins, the
//! prefix is stripped and the rest appended to the upstream URL.

use crate::config::Route;

/// Finds the route for `path` (routes are sorted longest prefix first).
/// Prefixes match whole segments: `/v1` matches `/v1` and `/v1/x`, not `/v10`.
/// Returns the route and the rest of the path after the prefix.
pub fn match_route<'r, 'p>(routes: &'r [Route], path: &'p str) -> Option<(&'r Route, &'p str)> {
    routes.iter().find_map(|r| {
        let rest = path.strip_prefix(r.match_prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some((r, rest))
    })
}

/// The upstream path and query for `rest` (as returned by [`match_route`]).
///
/// An empty rest, or a lone `/` right after the prefix, maps to the upstream
/// URL exactly, so `POST http://127.0.0.1:8080/` reaches
/// `…/v1/infers/<id>` and not `…/v1/infers/<id>/`. The query is forwarded as
/// received, byte for byte.
pub fn upstream_path_and_query(base_path: &str, rest: &str, query: Option<&str>) -> String {
    let mut out =
        String::with_capacity(base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    if rest.is_empty() || rest == "/" {
        out.push_str(if base_path.is_empty() { "/" } else { base_path });
    } else {
        out.push_str(base_path.trim_end_matches('/'));
        out.push_str(rest);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::credentials::fake::FakeSources;

    fn routes() -> Vec<Route> {
        let text = r#"
[[route]]
prefix = "/"
upstream = "https://h/v1/infers/root"
[[route]]
prefix = "/v1/"
upstream = "https://h/v1/infers/one"
[[route]]
prefix = "/v1/special"
upstream = "https://h/"
"#;
        config::load(text, &FakeSources::default())
            .unwrap()
            .config
            .routes
    }

    fn mapped(path: &str, query: Option<&str>) -> (String, String) {
        let routes = routes();
        let (r, rest) = match_route(&routes, path).unwrap();
        (
            r.prefix.clone(),
            upstream_path_and_query(&r.upstream.base_path, rest, query),
        )
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        assert_eq!(mapped("/", None), ("/".into(), "/v1/infers/root".into()));
        assert_eq!(
            mapped("/predict", None),
            ("/".into(), "/v1/infers/root/predict".into())
        );
        assert_eq!(
            mapped("/v1", None),
            ("/v1/".into(), "/v1/infers/one".into())
        );
        assert_eq!(
            mapped("/v1/", None),
            ("/v1/".into(), "/v1/infers/one".into())
        );
        assert_eq!(
            mapped("/v1/x/y", None),
            ("/v1/".into(), "/v1/infers/one/x/y".into())
        );
        assert_eq!(
            mapped("/v10", None),
            ("/".into(), "/v1/infers/root/v10".into())
        );
        assert_eq!(
            mapped("/v1/special/a", None),
            ("/v1/special".into(), "/a".into())
        );
        assert_eq!(
            mapped("/v1/special", None),
            ("/v1/special".into(), "/".into())
        );
    }

    #[test]
    fn the_query_and_path_are_forwarded_byte_for_byte() {
        assert_eq!(
            mapped("/a%2Fb/./c//d", Some("q=a+b&flag&x=%E4%B8%AD")).1,
            "/v1/infers/root/a%2Fb/./c//d?q=a+b&flag&x=%E4%B8%AD"
        );
        assert_eq!(mapped("/", Some("")).1, "/v1/infers/root?");
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let routes: Vec<Route> = routes().into_iter().filter(|r| r.prefix != "/").collect();
        assert!(match_route(&routes, "/other").is_none());
    }
}
