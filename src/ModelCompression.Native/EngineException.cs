namespace ModelCompression.Native;

/// <summary>What kind of failure an <see cref="EngineException"/> is; the cmdlets map it to an ErrorCategory.</summary>
public enum EngineErrorKind
{
    ObjectNotFound,
    InvalidData,
    InvalidArgument,
    InvalidOperation,
    NotImplemented,
    SecurityError,
    LimitsExceeded,
    ResourceExists,
    WriteError,
    ReadError,
}

/// <summary>
/// The one exception type the engine throws for expected failures. <see cref="ErrorId"/> is stable:
/// scripts and tests match on it.
/// </summary>
public sealed class EngineException : Exception
{
    public EngineException(string errorId, EngineErrorKind kind, string message, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Kind = kind;
    }

    public string ErrorId { get; }
    public EngineErrorKind Kind { get; }
    /// <summary>The file or object the error is about, when there is one.</summary>
    public string? Target { get; init; }
}
