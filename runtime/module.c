/*
 * module.c — the registry of C modules. Each unit registers its Lua modules from a constructor
 * (FR_MODULE in flowrun.h); main.c puts them in package.preload. A unit of its own so that the
 * C unit tests, which link everything but main.c, have it too.
 */
#include "flowrun.h"

static fr_module_t *modules;

void fr_module_register(fr_module_t *m)
{
    m->next = modules;
    modules = m;
}

fr_module_t *fr_modules(void)
{
    return modules;
}
