using System.Management.Automation;
using ModelCompression.Native;
using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>
/// What every ModelCompression cmdlet shares: Ctrl+C as a cancellation token for the engine, progress
/// reporting, and turning engine exceptions into error records with stable ids and categories.
/// </summary>
public abstract class ModelCmdletBase : PSCmdlet
{
    // Never disposed on purpose: Ctrl+C may arrive after EndProcessing, and a source with no timer holds nothing to free.
    readonly CancellationTokenSource stop = new();

    /// <summary>Cancelled when the user presses Ctrl+C; pass it to every engine call.</summary>
    protected CancellationToken CancellationToken => stop.Token;

    protected override void StopProcessing() => stop.Cancel();

    /// <summary>Runs engine work for one input; an expected failure becomes a non-terminating error and false.</summary>
    protected bool TryInvoke(Action work, object? target)
    {
        try
        {
            work();
            return true;
        }
        catch (EngineException e)
        {
            WriteError(ToErrorRecord(e, target));
            return false;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            throw new PipelineStoppedException();
        }
        catch (Exception e) when (IsUnexpected(e))
        {
            WriteError(Unexpected(e, target));
            return false;
        }
    }

    /// <summary>Runs engine work that nothing can go on without; a failure terminates the cmdlet.</summary>
    protected T InvokeOrTerminate<T>(Func<T> work, object? target)
    {
        try
        {
            return work();
        }
        catch (EngineException e)
        {
            ThrowTerminatingError(ToErrorRecord(e, target));
            throw; // not reached
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            throw new PipelineStoppedException();
        }
        catch (Exception e) when (IsUnexpected(e))
        {
            ThrowTerminatingError(Unexpected(e, target));
            throw; // not reached
        }
    }

    /// <summary>Loads a model file and shows what loading found wrong but survivable (a damaged history) as warnings.</summary>
    protected OnnxModel LoadModel(string file)
    {
        var model = ModelIO.Load(file, CancellationToken);
        foreach (var warning in model.LoadWarnings) WriteWarning(warning);
        return model;
    }

    /// <summary>PowerShell's own exceptions (a stopped pipeline, a downstream terminating error) pass through untouched.</summary>
    static bool IsUnexpected(Exception e) => e is not (OperationCanceledException or RuntimeException);

    /// <summary>
    /// The last resort: a failure the engine did not foresee still becomes an error record with a stable id, naming
    /// the model or file, with the exception kept inside. The fuzz test treats this id as a defect to fix.
    /// </summary>
    static ErrorRecord Unexpected(Exception e, object? target)
    {
        if (e is AggregateException { InnerExceptions: [EngineException inner] }) return ToErrorRecord(inner, target);
        string what = target switch { Model m => $"model '{m.Name}'", string s => $"'{s}'", null => "the input", _ => $"'{target}'" };
        var wrapped = new InvalidOperationException($"Unexpected {e.GetType().Name} while processing {what}: {e.Message}", e);
        return new ErrorRecord(wrapped, "UnexpectedError", ErrorCategory.NotSpecified, target);
    }

    protected static ErrorRecord ToErrorRecord(EngineException e, object? target) =>
        new(e, e.ErrorId, Category(e.Kind), target ?? e.Target);

    protected void ThrowArgumentError(string errorId, string message, object? target) =>
        ThrowTerminatingError(new ErrorRecord(new ArgumentException(message), errorId, ErrorCategory.InvalidArgument, target));

    static ErrorCategory Category(EngineErrorKind kind) => kind switch
    {
        EngineErrorKind.ObjectNotFound => ErrorCategory.ObjectNotFound,
        EngineErrorKind.InvalidData => ErrorCategory.InvalidData,
        EngineErrorKind.InvalidArgument => ErrorCategory.InvalidArgument,
        EngineErrorKind.InvalidOperation => ErrorCategory.InvalidOperation,
        EngineErrorKind.NotImplemented => ErrorCategory.NotImplemented,
        EngineErrorKind.SecurityError => ErrorCategory.SecurityError,
        EngineErrorKind.LimitsExceeded => ErrorCategory.LimitsExceeded,
        EngineErrorKind.ResourceExists => ErrorCategory.ResourceExists,
        EngineErrorKind.WriteError => ErrorCategory.WriteError,
        EngineErrorKind.ReadError => ErrorCategory.ReadError,
        _ => ErrorCategory.NotSpecified,
    };

    /// <summary>
    /// What a stage reported beside its model: its warnings (what the user should act on) as warnings naming the model,
    /// its notes to -Verbose.
    /// </summary>
    protected void WriteStageReport(Model model, ModelReport report)
    {
        foreach (var warning in report.Warnings) WriteWarning($"Model '{model.Name}': {warning}");
        foreach (var note in report.Notes) WriteVerbose(note);
    }

    /// <summary>Progress records for <paramref name="activity"/>, with the time left estimated from measured throughput.</summary>
    private protected ProgressWriter NewProgress(string activity) => new(this, activity);

    /// <summary>Resolves a path the user typed (relative to the current location, provider-qualified or not) to a file-system path.</summary>
    protected string ResolveOutputPath(string path) => SessionState.Path.GetUnresolvedProviderPathFromPSPath(path);
}
