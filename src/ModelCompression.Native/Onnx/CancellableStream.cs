namespace ModelCompression.Native.Onnx;

/// <summary>Checks a cancellation token on every write so Ctrl+C stops a long save promptly.</summary>
internal sealed class CancellableStream(Stream inner, CancellationToken cancel) : Stream
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) { cancel.ThrowIfCancellationRequested(); inner.Write(buffer, offset, count); }
    public override void Write(ReadOnlySpan<byte> buffer) { cancel.ThrowIfCancellationRequested(); inner.Write(buffer); }
}
