//! The codec of the generated services: prost's, except that a request prost cannot decode
//! is INVALID_ARGUMENT (the caller sent bad input) instead of tonic-prost's INTERNAL, as the
//! DecisionService's wire path answers it. A response a client cannot decode stays INTERNAL.
use crate::error::Error;
use prost::Message;
use std::collections::HashSet;
use std::sync::OnceLock;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// `tonic_prost::ProstCodec` with requests refused as INVALID_ARGUMENT (build.rs names it).
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            let name = short_name::<U>();
            if s.code() == tonic::Code::Internal && is_request(name) {
                Error::invalid(name, s.message().to_string()).into()
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

fn short_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Whether some method of the API takes `name` as its input.
fn is_request(name: &str) -> bool {
    static INPUTS: OnceLock<HashSet<String>> = OnceLock::new();
    INPUTS
        .get_or_init(|| {
            let mut inputs = HashSet::new();
            if let Ok(set) =
                prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            {
                for f in set.file {
                    for s in f.service {
                        for m in s.method {
                            let t = m.input_type();
                            inputs.insert(t.rsplit('.').next().unwrap_or(t).to_string());
                        }
                    }
                }
            }
            inputs
        })
        .contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_known_by_their_short_names() {
        assert!(is_request(
            short_name::<crate::proto::RecordConsentRequest>()
        ));
        assert!(is_request(short_name::<crate::proto::ImportConsentsChunk>()));
        assert!(!is_request(
            short_name::<crate::proto::RecordConsentResponse>()
        ));
    }
}
