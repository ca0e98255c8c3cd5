using System.Runtime.InteropServices;

namespace Optimum.Core;

/// <summary>
/// What ONNX Runtime's CUDA provider needs before ORT tries it: ORT's own failure names only the first missing library,
/// in a log line, and its exception says "Failed to load shared library". Probing first names every missing one.
/// </summary>
internal static class CudaLibraries
{
    /// <summary>The provider library of the Microsoft.ML.OnnxRuntime.Gpu.Linux package.</summary>
    public const string Provider = "libonnxruntime_providers_cuda.so";

    /// <summary>What ORT 1.31's CUDA provider links or loads: the CUDA 13 runtime and libraries, cuDNN 9, the driver.</summary>
    public static readonly string[] Needed = ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudnn.so.9", "libcuda.so.1"];

    /// <summary>Null when the provider library loads; else why not, naming the files that are missing.</summary>
    public static string? Problem()
    {
        if (!OperatingSystem.IsLinux()) return null;       // other systems: ORT's own message
        var dirs = new[] { AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native") };
        var provider = dirs.Select(d => Path.Combine(d, Provider)).FirstOrDefault(File.Exists);
        if (provider is null)
            return $"{Provider} is not beside the application (looked in {string.Join(", ", dirs)}): publish with the Microsoft.ML.OnnxRuntime.Gpu.Linux package (-p:OrtNative=cuda)";
        if (NativeLibrary.TryLoad(provider, out var handle))
        {
            NativeLibrary.Free(handle);
            return null;
        }
        var missing = Needed.Where(name =>
        {
            if (!NativeLibrary.TryLoad(name, out var h)) return true;
            NativeLibrary.Free(h);
            return false;
        }).ToArray();
        if (missing.Length > 0)
            return $"{Provider} cannot load: missing {string.Join(", ", missing)} (the CUDA 13 runtime and libraries, cuDNN 9 and the NVIDIA driver must be on LD_LIBRARY_PATH or in the system's library path)";
        try { NativeLibrary.Load(provider); }
        catch (DllNotFoundException e) { return $"{Provider} cannot load: {e.Message.Trim()}"; }
        return null;
    }
}
