using System.Management.Automation;
using ModelCompression.Native;
using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>
/// Lets a parameter of type <see cref="Model"/> take a path too (-Teacher ./t.onnx, -Baseline $m): a string or
/// FileInfo is loaded with Get-Model's rules; errors say which file and why.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class ModelArgumentAttribute : ArgumentTransformationAttribute
{
    public override object Transform(EngineIntrinsics engineIntrinsics, object inputData)
    {
        object value = inputData is PSObject pso ? pso.BaseObject : inputData;
        string? path = value switch
        {
            Model => null,
            string s => s,
            FileSystemInfo f => f.FullName,
            PathInfo p => p.ProviderPath,
            _ => throw new ArgumentTransformationMetadataException($"Expected a Model (from Get-Model) or the path of an ONNX file, got {value?.GetType().Name ?? "null"}."),
        };
        if (path is null) return value;
        try
        {
            string full = engineIntrinsics.SessionState.Path.GetUnresolvedProviderPathFromPSPath(path);
            return new Model(ModelIO.Load(full));
        }
        catch (EngineException e)
        {
            throw new ArgumentTransformationMetadataException(e.Message, e);
        }
    }
}
