import { createContext, useContext } from 'react';

/** The signed-in role: what a SERVER key may not do is not offered (ADMIN-only pages and actions). */
export const RoleContext = createContext<string>('SERVER');
export const useIsAdmin = (): boolean => useContext(RoleContext) === 'ADMIN';
