//! Jetstream v1's zstd: each message compressed alone, as one zstd frame, with Jetstream's
//! own dictionary (`zstd/legacy_subscribe.zdict`, provenance and license beside it), a
//! 128 KiB window and zstd's default level, sent as a binary WebSocket message.
//!
//! Where it sits: session (one per client that asked with `compress=true` or
//! `Socket-Encoding: zstd`) → **zstd** → socket. The dictionary is digested once per
//! process and shared; each client has its own compression context.

use std::sync::OnceLock;
use zstd::dict::EncoderDictionary;
use zstd::stream::raw::CParameter;

/// Jetstream v1's dictionary, as its clients decompress with it.
pub const DICTIONARY: &[u8] = include_bytes!("../zstd/legacy_subscribe.zdict");
/// zstd's default level, as Jetstream v1 compresses.
const LEVEL: i32 = 3;
/// 2^17 = 128 KiB.
const WINDOW_LOG: u32 = 17;

fn dictionary() -> &'static EncoderDictionary<'static> {
    static PREPARED: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    PREPARED.get_or_init(|| EncoderDictionary::copy(DICTIONARY, LEVEL))
}

/// One client's compressor.
pub struct Zstd(zstd::bulk::Compressor<'static>);

impl Zstd {
    /// A compression context with the shared dictionary.
    pub fn new() -> std::io::Result<Zstd> {
        let mut c = zstd::bulk::Compressor::with_prepared_dictionary(dictionary())?;
        c.set_parameter(CParameter::WindowLog(WINDOW_LOG))?;
        Ok(Zstd(c))
    }

    /// One message as one zstd frame.
    pub fn compress(&mut self, json: &[u8]) -> std::io::Result<Vec<u8>> {
        self.0.compress(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_the_dictionary_and_smaller_than_without() {
        let json = br#"{"did":"did:plc:abc","time_us":1725911162329308,"cursor":7,"kind":"commit","commit":{"rev":"3l","operation":"create","collection":"app.bsky.feed.like","rkey":"3l","record":{"$type":"app.bsky.feed.like","createdAt":"2024-09-09T19:46:02.102Z","subject":{"cid":"bafyreidc6sydkkbchcyg62v77wbhzvb2mvytlmsychqgwf2xojjtirmzj4","uri":"at://did:plc:wa7b35aakoll7hugkrjtf3xf/app.bsky.feed.post/3l3pte3p2e325"}},"cid":"bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi"}}"#;
        let mut z = Zstd::new().expect("compressor");
        let frame = z.compress(json).expect("compress");
        let plain = zstd::bulk::compress(json, LEVEL).expect("plain");
        assert!(
            frame.len() < plain.len(),
            "{} vs {}",
            frame.len(),
            plain.len()
        );
        let mut d = zstd::bulk::Decompressor::with_dictionary(DICTIONARY).expect("d");
        assert_eq!(d.decompress(&frame, 1 << 20).expect("decompress"), json);
        // The frame names the dictionary (id 1612007021), as Jetstream's do.
        assert_eq!(
            zstd::zstd_safe::get_dict_id_from_frame(&frame).map(|n| n.get()),
            Some(1_612_007_021)
        );
    }
}
