// The completions, forecasting and image generation service on its own: dotnet run --project src/Optimum.Server -- --Optimum:Models:0=<model folder> --urls http://127.0.0.1:5000
// (optimum-net serve --model <folder> does the same).
using Optimum.Server;

var app = OptimumServer.Build(args);
app.Run();

/// <summary>The entry point, visible to WebApplicationFactory in tests.</summary>
public partial class Program;
