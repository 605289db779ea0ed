using Microsoft.ML.OnnxRuntime;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// Every ONNX Runtime environment, session option and run option the engine makes comes from here, with ONNX Runtime's
/// own logging at error level: its warnings go straight to the process's stderr, past PowerShell's streams, and tell of
/// choices the engine made on purpose (what the user should act on, the engine reports itself).
/// </summary>
public static class OrtObjects
{
    public const OrtLoggingLevel LogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;

    static readonly Lazy<OrtEnv> Env = new(() =>
    {
        var env = OrtEnv.Instance();
        env.EnvLogLevel = LogLevel;
        return env;
    });

    /// <summary>The process's ONNX Runtime environment, logging errors only.</summary>
    public static OrtEnv Environment => Env.Value;

    public static SessionOptions SessionOptions()
    {
        _ = Env.Value;
        return new SessionOptions { LogSeverityLevel = LogLevel };
    }

    public static RunOptions RunOptions()
    {
        _ = Env.Value;
        return new RunOptions { LogSeverityLevel = LogLevel };
    }
}
