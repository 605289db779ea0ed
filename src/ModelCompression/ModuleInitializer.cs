using System.Management.Automation;
using System.Reflection;
using System.Runtime.Loader;

namespace ModelCompression;

/// <summary>
/// Loads the engine and all its dependencies (Google.Protobuf, ONNX Runtime, System.Numerics.Tensors) from
/// Dependencies/ into the module's own load context, so that other modules' versions of them neither break
/// us nor get broken by us. Only the engine's name is resolved from the default context; everything it needs
/// then comes from the private one. This class must not mention any engine type.
/// </summary>
public sealed class ModuleInitializer : IModuleAssemblyInitializer, IModuleAssemblyCleanup
{
    const string EngineName = "ModelCompression.Native";
    static readonly string DependenciesDir = Path.Combine(Path.GetDirectoryName(typeof(ModuleInitializer).Assembly.Location)!, "Dependencies");
    static readonly EngineLoadContext Context = new(Path.Combine(DependenciesDir, EngineName + ".dll"));

    public void OnImport() => AssemblyLoadContext.Default.Resolving += ResolveEngine;

    public void OnRemove(PSModuleInfo psModuleInfo) => AssemblyLoadContext.Default.Resolving -= ResolveEngine;

    static Assembly? ResolveEngine(AssemblyLoadContext context, AssemblyName name) =>
        name.Name == EngineName ? Context.LoadFromAssemblyName(name) : null;

    sealed class EngineLoadContext(string enginePath) : AssemblyLoadContext("ModelCompression", isCollectible: false)
    {
        readonly AssemblyDependencyResolver resolver = new(enginePath);

        protected override Assembly? Load(AssemblyName name)
        {
            string? path = resolver.ResolveAssemblyToPath(name);
            return path is null ? null : LoadFromAssemblyPath(path);
        }

        protected override IntPtr LoadUnmanagedDll(string name)
        {
            string? path = resolver.ResolveUnmanagedDllToPath(name);
            return path is null ? IntPtr.Zero : LoadUnmanagedDllFromPath(path);
        }
    }
}
