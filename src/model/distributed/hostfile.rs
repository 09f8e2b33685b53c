//! MLX's ring hostfile: a JSON list with one entry per rank, each a list of `"ip:port"`
//! strings (several addresses per rank open several connections between neighbours), e.g.
//! `[["127.0.0.1:32323"], ["127.0.0.1:32324"]]`. `mlx.launch` writes this format for the ranks
//! it starts; its own `--hostfile` (`[{"ssh": "host", "ips": [...]}]`) is the launcher's input.
use super::DistributedError;
use std::net::TcpListener;
use std::path::Path;

/// The addresses of every rank, in rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostfile {
    pub ranks: Vec<Vec<String>>,
}

impl Hostfile {
    /// `ranks` local ranks on 127.0.0.1, each on a port that was free when asked (the
    /// listeners are held together so that no two ranks get the same port).
    pub fn local(ranks: usize) -> std::io::Result<Self> {
        let listeners = (0..ranks).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
        let ranks = listeners
            .iter()
            .map(|listener| Ok(vec![format!("127.0.0.1:{}", listener.local_addr()?.port())]))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { ranks })
    }

    /// Read and check the hostfile at `path`.
    pub fn read(path: &Path) -> Result<Self, DistributedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DistributedError::Setup(format!("cannot read the hostfile `{}`: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| DistributedError::Setup(format!("the hostfile `{}` is not usable: {e}", path.display())))
    }

    /// Parse and check MLX's format: at least one rank, each with at least one `host:port`,
    /// every rank with the same number of addresses (the ring backend needs as many
    /// connections to the left as to the right).
    pub fn parse(text: &str) -> Result<Self, String> {
        let ranks: Vec<Vec<String>> = serde_json::from_str(text)
            .map_err(|e| format!("expected MLX's format, a JSON list with one list of \"ip:port\" per rank ({e})"))?;
        if ranks.is_empty() {
            return Err("it names no rank".into());
        }
        for (rank, addresses) in ranks.iter().enumerate() {
            if addresses.is_empty() {
                return Err(format!("rank {rank} has no address"));
            }
            if addresses.len() != ranks[0].len() {
                return Err(format!(
                    "rank {rank} has {} addresses and rank 0 has {}: the ring needs the same number for every rank",
                    addresses.len(),
                    ranks[0].len()
                ));
            }
            for address in addresses {
                check_address(address).map_err(|e| format!("rank {rank}: {e}"))?;
            }
        }
        Ok(Self { ranks })
    }

    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    /// The JSON text MLX reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.ranks).unwrap_or_else(|never| unreachable!("a list of strings: {never}"))
    }

    /// Write the hostfile to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }
}

/// `host:port` with a non-empty host (no whitespace) and a port 1..=65535.
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("`{address}` is not host:port"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{address}` has no usable host"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("`{address}` has no port between 1 and 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hostfile_has_distinct_ports_and_round_trips() {
        let hostfile = Hostfile::local(4).unwrap();
        assert_eq!(hostfile.len(), 4);
        let mut ports: Vec<&str> = hostfile.ranks.iter().map(|r| r[0].rsplit_once(':').unwrap().1).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 4);
        assert_eq!(Hostfile::parse(&hostfile.to_json()).unwrap(), hostfile);
    }

    #[test]
    fn reads_mlx_format() {
        let hostfile =
            Hostfile::parse(r#"[["10.0.0.1:5000","10.0.0.1:5001"],["mac2.local:5000","mac2.local:5001"]]"#).unwrap();
        assert_eq!(hostfile.len(), 2);
    }

    #[test]
    fn rejects_what_mlx_cannot_use() {
        for (text, expected) in [
            ("not json", "JSON list"),
            ("[]", "no rank"),
            (r#"[["127.0.0.1:5000"], []]"#, "rank 1 has no address"),
            (r#"[["127.0.0.1"]]"#, "not host:port"),
            (r#"[["127.0.0.1:0"]]"#, "no port"),
            (r#"[["127.0.0.1:99999"]]"#, "no port"),
            (r#"[[":5000"]]"#, "no usable host"),
            (r#"[["a:1","a:2"],["b:1"]]"#, "same number"),
            (r#"[{"ssh": "mac1", "ips": ["10.0.0.1"]}]"#, "JSON list"),
        ] {
            let error = Hostfile::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_missing_file_is_a_setup_error() {
        let error = Hostfile::read(Path::new("/nonexistent/hosts.json")).unwrap_err();
        assert!(error.is_bad_input());
        assert!(error.to_string().contains("cannot read the hostfile"), "{error}");
    }
}
