//! The gRPC codec of every generated service: prost's, except that a message's buffer is sized
//! once to its encoded length before encoding.
//!
//! Why: tonic starts each response in an 8 KiB buffer and prost writes into it field by field,
//! so a 4 MiB fetch response grew by doubling — copying itself about once more and faulting in
//! fresh pages at each step. Reserving its length first makes encoding one copy. (Every gRPC
//! call of the test suite goes through it; the debug assertion checks the length each time.)

use bytes::BufMut;
use std::marker::PhantomData;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;

/// A prost codec whose encoder reserves each message's encoded length first.
#[derive(Debug, Clone, Copy)]
pub struct SizedProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SizedProstCodec<T, U> {
    fn default() -> Self {
        SizedProstCodec(PhantomData)
    }
}

impl<T, U> Codec for SizedProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// Encodes `T` into a buffer first grown to its encoded length.
#[derive(Debug, Clone, Copy)]
pub struct SizedProstEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for SizedProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        let length = item.encoded_len();
        buf.reserve(length);
        let before = buf.remaining_mut();
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a {length}-byte message: {e}")))?;
        debug_assert_eq!(before - buf.remaining_mut(), length);
        Ok(())
    }
}
